# Shared gunicorn settings; the real file is gpu_audio/gunicorn_conf.py so an
# installed package carries it too. Usage:
#   gunicorn -c gunicorn.conf.py 'tts.app:create_app()'
from gpu_audio.gunicorn_conf import *  # noqa: F401,F403
