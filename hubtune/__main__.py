from hubtune.commands import main
import sys

sys.exit(main())
