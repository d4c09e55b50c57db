"""Losses and masking shared by the self-supervised and joint speech–text models."""
