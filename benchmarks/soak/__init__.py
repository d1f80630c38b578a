"""``make soak``: a bounded, self-checking chaos run of distbreaker on a private Redis.

Worker processes call a flaky upstream through shared breakers, in both consistency
modes, while the parent breaks Redis in every way the schedule names; then pure checks
over the recorded timeline say which invariants held (``checker``) and print one table.
"""
