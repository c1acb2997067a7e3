"""Identities that stay healthy after verification: their bounce and complaint rates (rates.py), and — as the health
feature grows — the scheduled re-checks and the pause that stops a damaging identity."""

from bot.services.health.rates import RATE_WINDOW, Rates, SendingRates

__all__ = ["RATE_WINDOW", "Rates", "SendingRates"]
