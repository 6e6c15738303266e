"""Platform side of the house: the chat adapters (discord/, slack/, cli/ for the console and the
command line), the HTTP server (server.py) and the composition root (app.py). Adapters translate a
platform's input into a ``bot.commands`` call and render its neutral answer; they never talk to a
provider.
"""
