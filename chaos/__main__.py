from chaos.cli import app

app(prog_name="python -m chaos")
