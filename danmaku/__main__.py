from danmaku.cli import main

raise SystemExit(main())
