from gpu_audio.cli import main

raise SystemExit(main())
