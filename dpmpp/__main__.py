from dpmpp.cli import main

raise SystemExit(main())
