"""Helpers the tests share: real peers (Mosquitto), tiny models and synthetic data."""
