"""Teleop / policy arbitration (intervention): teleop takes over as soon as the operator is active and hands back
to the policy `handback_s` after the operator lets go."""

from __future__ import annotations

POLICY, TELEOP = "policy", "teleop"


class CommandMux:
    """`update(teleop_active, now)` -> the source whose commands go to the robot; without a policy, teleop."""

    def __init__(self, handback_s: float = 0.5, policy: bool = True) -> None:
        self.handback_s, self.policy = handback_s, policy
        self.source = POLICY if policy else TELEOP
        self.last_active: float | None = None
        self.takeovers = 0
        self.handbacks = 0

    @property
    def intervening(self) -> bool:
        """Teleop drives a robot that a policy would otherwise drive."""
        return self.policy and self.source == TELEOP

    def update(self, teleop_active: bool, now: float) -> str:
        if teleop_active:
            self.last_active = now
            if self.source != TELEOP:
                self.source, self.takeovers = TELEOP, self.takeovers + 1
        elif (self.policy and self.source == TELEOP and self.last_active is not None
              and now - self.last_active >= self.handback_s):
            self.source, self.handbacks = POLICY, self.handbacks + 1
        return self.source
