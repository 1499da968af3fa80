"""Completion callbacks: POST a finished invocation, signed, to the URL it asked for.

`urls` checks a callback URL (at declaration and at accept); `delivery` sends what is
due, from the sweep, through the outbound rules of `ctx.http`. See docs/callbacks.md.
"""
