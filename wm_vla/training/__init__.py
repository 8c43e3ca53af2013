"""Training: LeRobot datasets -> windows; policy, world model and distillation loops."""
