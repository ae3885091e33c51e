"""Modules built on the fused ops: the CA activation of CPRL and its interventions."""

from cprl_fast.nn.cpr_activation import MODES, CPRLActivation, intervention

__all__ = ["MODES", "CPRLActivation", "intervention"]
