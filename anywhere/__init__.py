"""anywhere: put on-prem hosts into Amazon ECS Anywhere, safely and at fleet scale."""

__version__ = "0.1.0"
