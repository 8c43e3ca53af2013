"""Evaluation: closed-loop and bag evaluation, statistics, reports."""
