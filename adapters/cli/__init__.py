"""The terminal: `quota-bot` and its subcommands (main.py), the console chat that `run` falls back to
without Discord or Slack (console.py), and the terminal rendering of answers (render.py).
"""
