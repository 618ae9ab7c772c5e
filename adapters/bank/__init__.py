"""The bank agent: carries out hub orders through the institution's core bank."""

from adapters.bank.agent import BankAgent

__all__ = ["BankAgent"]
