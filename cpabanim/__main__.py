from cpabanim.cli import main

raise SystemExit(main())
