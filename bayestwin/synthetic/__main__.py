"""``python -m bayestwin.synthetic``: print the true effects of a synthetic history."""

from bayestwin.synthetic.cli import main

main()
