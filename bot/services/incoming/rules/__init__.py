"""The incoming-mail rules: one module per rule family, and the chain that runs them in order."""

from bot.services.incoming.rules.base import Classification, Rule
from bot.services.incoming.rules.chain import DEFAULT, RULE_NAMES, RULES, UNPARSEABLE, classify, run_rules

__all__ = ["DEFAULT", "RULES", "RULE_NAMES", "UNPARSEABLE", "Classification", "Rule", "classify", "run_rules"]
