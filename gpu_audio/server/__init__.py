"""Plumbing both Flask apps share: auth, errors, activity, health, the lane."""
