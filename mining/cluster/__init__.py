"""Talking to a Ray cluster from outside it: job submission through the dashboard's HTTP API."""
