"""Lab stand-ins for the SSM agent, the ECS agent and Docker; stdlib only (run on lab hosts)."""
