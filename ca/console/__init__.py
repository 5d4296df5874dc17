"""The web console for operators and auditors (issue 19, decision 0054).

Server-rendered pages (Flask, Jinja2 with autoescaping, plain HTML forms, no JavaScript)
served by the CA API process under ``/console``. A thin shell: every action calls the same
CA core operation the JSON API calls; the CA core never imports this package.
"""
