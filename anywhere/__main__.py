from anywhere.cli import main

main()
