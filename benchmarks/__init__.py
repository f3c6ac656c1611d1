"""Speed and memory measurements of anywhere against its floor and Ansible (see README)."""
