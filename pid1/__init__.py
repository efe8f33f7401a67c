"""only-docker's PID 1: boots a machine whose only service is Docker."""
