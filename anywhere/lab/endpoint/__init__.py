"""The lab's local AWS endpoint: moto's server plus what moto lacks for ECS Anywhere."""
