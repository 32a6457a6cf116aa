import sys

from audio_stitch.cli import main

sys.exit(main())
