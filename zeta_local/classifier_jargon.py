"""A broad lexicon of programming jargon for the classifier's rules (`jargon:` signals).

Hand-written by the zeta_local team for this repository (licence: this repository's), plus
the names of the Python standard library's modules, builtins and exceptions (`PYTHON_NAMES`,
written out from Python 3.11), less the ones that are everyday English words. Terms name programming
tools, packages, commands, platforms, error and status names, concepts and config keys that a
chat or reasoning prompt would hardly use: the learned stage reads "some jargon fired" as one
feature, so it can call code a prompt whose particular tool it never saw in training.

Ambiguous words (go, rust, java, c, python, react, swift, ruby, pandas, cargo...) and words
with an everyday sense (bug, shell, window, cookie, thread, table, key, cloud, app) are
deliberately absent; the rules treat the ambiguous ones with context.
"""

from __future__ import annotations


# Tools, platforms, packages, frameworks, services (lower case, one "|"-separated string each).
TOOLS = (
    ".env file|.htaccess|aab|activerecord|adb|airflow dag|aks|android studio|ansible|api gateway|apk|apps script|"
    "appsettings.json|arduino ide|argo cd|argocd|argon2|asp.net|asyncio|autoconf|automake|autovacuum|avrdude|aws cli|"
    "aws lambda|awscli|azure devops|azure pipelines|babel|bazel|bcrypt|bigquery|bitbucket|black formatter|blazor|"
    "blueprints ue|bootstrap css|boto3|build.gradle|buildkite|bundler|cargo.toml|celery beat|celery worker|certbot|"
    "chromedriver|circleci|clickhouse|clion|cloudflare workers|cloudformation|cloudfront|cloudwatch|cmakelists|"
    "cmakelists.txt|cocoapods|codeql|combine framework|composer.json|configmap|containerd|content security policy|"
    "coredns|cors|cosmosdb|crashloopbackoff|cri-o|cronjob|csp header|csrf|cuda|daemonset|dask|databricks|datadog|"
    "datagrip|dbeaver|deno|dependabot|directx|docker desktop|docker hub|docker-compose.yml|dockerhub|dotenv|dotnet|"
    "duckdb|dynamodb|ec2|eclipse ide|eks|elasticsearch|emacs|entity framework|esbuild|eslint|esp32|esp8266|esphome|"
    "etcd|excel macro|expo go|express.js|expressjs|fargate|fastlane|firebase|firestore|flake8|fluentd|flyway|"
    "freertos|gatsby|gcloud|gdb|gdscript|ghc|git cherry-pick|github action|gitignore|gitlab ci|gitlab-ci|gke|glsl|"
    "gnucobol|go.mod|goland|google apps script|gpg|gpio|gradle sync|grafana|grpc|gunicorn|hadoop|haproxy|helm chart|"
    "helmfile|heroku|hlsl|hmac|home assistant yaml|htaccess|htmx|hugging face|huggingface|hydration error|i2c|"
    "iam policy|iam role|imagepullbackoff|influxdb|ingress|ingress controller|innodb|intellij|isort|istio|jdbc|"
    "jenkinsfile|jetbrains|jetpack compose|jira api|jmeter|jquery|jsx|jupyterlab|jwt|k6|k8s|keras|keystore|kibana|"
    "kinesis|knex|kotlin|kube-proxy|kubeadm|kubectl|kubelet|kubernetes|kustomize|lambda function|laravel|lerna|"
    "let's encrypt|letsencrypt|lightgbm|linkerd|linq|liquibase|lldb|loadbalancer service|logcat|logstash|love2d|"
    "ltrace|luau|mariadb|matplotlib|md5|memcached|micropython|minikube|mlflow|mongosh|mqtt|mtls|mypy|mysqldump|"
    "neovim|nestjs|netlify|next.js|nextjs|nginx|nginx.conf|node-red|node_modules|nodemon|nodeport|npm|npx|nuget|nuxt|"
    "nvm|oauth|oauth2|odbc|oidc|ollama|oomkilled|openapi|opengl|openid connect|openssl|opentelemetry|oplog|oracle db|"
    "orm|otel|owasp|package-lock.json|pagerduty|pem file|perf record|persistentvolume|pg_dump|pg_hba|pg_restore|"
    "pg_wal|pgadmin|pgbouncer|phpmyadmin|pipenv|pkg-config|platformio|plotly|pnpm|podman|poetry lock|polars|pom.xml|"
    "power bi|power query|pre-commit|prisma|protobuf|psql|pycharm|pydantic|pygame|pyinstaller|pylint|pyproject|"
    "pyproject.toml|pyspark|pytest|qemu|rabbitmq|raspberry pi gpio|raylib|react native|redux|replica set|"
    "requirements.txt|rider ide|roblox studio|robo3t|route53|rsa key|rspec|rubocop|s3 bucket|salt stack|saml|"
    "scikit-learn|scipy|scrypt|sdl2|seaborn|semgrep|sequelize|serverless|service mesh|setup.py|sha-256|sha256|shader|"
    "shaders|skaffold|sklearn|snowflake sql|snyk|solr|sonarqube|spark sql|spi bus|splunk|springboot|sql injection|"
    "sqlalchemy|sqlite3|sqlserver|sqs|ssh key|ssl certificate|ssms|ssrf|statefulset|step functions|stm32|strace|"
    "streamlit|sublime text|supabase|sveltekit|swiftui|symfony|tableau calc|tailwindcss|tasmota|terraform|"
    "terraform plan|testflight|tfstate|tls handshake|tmux|tokio|traefik|travis ci|trivy|truststore|tsconfig|"
    "tsconfig.json|tsx|typeorm|typescript|uart|ubuntu server|uikit|unity3d|unreal engine|uvicorn|valgrind|"
    "values.yaml|vba|vercel|visual studio|vitest|vpc|vs code|vscode|vue.js|vuejs|vuex|vulkan|wasm|web.config|"
    "webassembly|webgl|webpack|webpack.config.js|websocket|websockets|webstorm|winforms|wireshark|wordpress plugin|"
    "workflow_dispatch|wpf|x509|xamarin|xaml|xcode|xgboost|xss|yarn|yarn.lock")

# Concepts and vocabulary of programming that everyday talk seldom uses.
CONCEPTS = (
    "$path|**kwargs|*args|.bashrc|.gitignore|.zshrc|0.0.0.0|127.0.0.1|401 unauthorized|403 forbidden|404 error|"
    "500 error|502 bad gateway|503 error|504 gateway timeout|abstract class|abstract syntax tree|access token|"
    "accessibility tree|active directory|adc reading|address already in use|adjacency list|aiohttp|alias in bash|"
    "api endpoint|api key|api keys|args and kwargs|aria-label|aria-live|arrow function|arrow functions|async await|"
    "atomic operation|atomics|auth header|authorization header|avro|b-tree|background job|background jobs|"
    "backpressure|backprop|backpropagation|backtrace|bad gateway|base image|base64|bash script|bashrc|batch file|"
    "baud rate|bdd|bearer token|beautifulsoup|bfs|big endian|big o|big-o|binary tree|binary trees|bind mount|"
    "bit shift|bitmask|bitwise|blas|blue-green|bootloader|borrow checker|box-sizing|breadth-first|broadcasting error|"
    "bs4|btree|bubble sort|buffer overflow|build error|build failed|build fails|build pipeline|build step|bullmq|"
    "bundle size|byte order mark|bytecode|cache line|cache miss|callback hell|canary deploy|cap theorem|"
    "captcha solver|capture group|cargo build|cargo run|celery beat|changelog|checkpoint file|chmod|chown|"
    "ci pipeline|ci/cd|cicd|cics|cidr|circuit breaker|cli tool|client secret|client-side rendering|cmake build|cname|"
    "cobol|code coverage|code smell|code splitting|command line|command-line|commit history|commit message|comp-3|"
    "compile error|compile fails|compile time error|compile-time|component tree|composer install|composite index|"
    "concurrency|conda env|conda-forge|confusion matrix|connection pool|connection pooling|connection refused|"
    "connection reset|container image|content-type|continuous integration|copybook|core dump|coroutine|cors error|"
    "cqrs|crlf|cron expression|cron job|cronjobs|crontab|cross join|cross-validation|css grid|css selector|"
    "css selectors|cte|ctes|cuda out of memory|currying|dangling pointer|data loader|data pipeline|data race|"
    "data.frame|dataloader|db2|dead letter queue|deadlocks|debounce|debouncing|decorator|decorators|deep copy|"
    "denormalization|denormalize|dependency hell|dependency injection|depth-first|deserialization|deserialize|"
    "design pattern|design patterns|detached head|dev server|dfs|dict comprehension|dijkstra|dmesg|dns record|"
    "docker container|docker image|dockerignore|dotfiles|dplyr|dry principle|dtype|dtypes|dunder|dynamic programming|"
    "e2e tests|eacces|eaddrinuse|econnrefused|elt|embedded c|embedding model|encapsulation|encoding error|"
    "end-to-end tests|endianness|enoent|env vars|environment variables|errno|eslint error|etimedout|etl|"
    "event listener|event listeners|event loop|event sourcing|eventual consistency|exit code|explain analyze|"
    "exponential backoff|factory pattern|false sharing|fast-forward|feature branch|feature engineering|feature flag|"
    "feature flags|fetch api|file descriptor|file descriptors|firewall rule|fit_transform|flaky test|flaky tests|"
    "flashing firmware|flexbox|float precision|floating point error|focus trap|force push|force-push|foreign key|"
    "fork bomb|formatter|fortran|full table scan|functions.php|functor|garbage collection|garbage collector|"
    "gateway timeout|gc pause|generator function|generic type|generics|ggplot|ggplot2|git bisect|git blame|git lfs|"
    "git log|git rebase|git remote|git stash|gitflow|glob pattern|go build|go run|go test|goroutine leak|"
    "gradient descent|gradle build|gradlew|graph traversal|graphql schema|greedy algorithm|green threads|groupby|"
    "grpc service|hard link|hash index|hash table|hashtable|headless browser|heap allocation|heap memory|heap sort|"
    "higher order function|higher-order function|hmr|hot module replacement|hot reload|http client|http request|"
    "http requests|http status|httpx|hydration error|hyperparameter|hyperparameters|idempotency|idempotent|ieee 754|"
    "immutability|index scan|indexeddb|inference server|inheritance hierarchy|inner join|inode|inodes|"
    "integer overflow|integration test|integration tests|interface method|interrupt handler|inversion of control|"
    "iptables|ipynb|isolation level|iterator|iterators|jcl|jit|jit compiler|job queue|journalctl|json parse|"
    "json.parse|json.stringify|jsonl|jsx element|jupyter notebook|jwt token|kerberos|kwargs|label encoding|"
    "lambda expression|lapack|lazy loading|ldap|left join|lexer|lifetime annotation|lifetimes|line endings|"
    "link error|linked lists|linker|linker error|linter|linting|list comprehension|little endian|live reload|lme4|"
    "load balancer|localhost:3000|localhost:8080|localstorage|lockfile|logrotate|lookahead|lookbehind|loss function|"
    "main branch|mainframe|make install|makefile target|marshalling|master branch|materialized view|matlab|"
    "maven build|media queries|media query|memoization|memoize|memory barrier|memory leak|memory leaks|merge request|"
    "merge sort|mergesort|message queue|metaclass|microcontroller|microservice|microservices|middleware|"
    "migration script|minified|minify|missing values in pandas|monad|monads|monorepo|mpi|multi-stage build|"
    "multithreaded|multithreading|mutation testing|mutexes|mvn|n+1|n+1 query|nameserver|nan values|nat gateway|"
    "ndarray|ndjson|nextflow|normalization|notebook kernel|npe|npm install|npm run|npm start|null reference|"
    "null values|nullpointerexception|numpy array|o(log n)|o(n)|o(n^2)|oauth flow|off by one error|off-by-one|"
    "on conflict|one hot encoding|one-hot|oom|openmp|operator overloading|optimistic locking|orc file|orm query|"
    "outbox pattern|outer join|overfitting|pair programming|parse error|parser generator|pass by reference|"
    "pass by value|path variable|permission denied (publickey)|pessimistic locking|php artisan|pip install|"
    "pipe buffer|pipeline.fit|pivot table formula|pointer arithmetic|polyfill|polymorphism|port 443|port 80|"
    "port forwarding|powershell script|preflight|primary key|profile.d|promise chain|promises|prop drilling|"
    "protobuf schema|pseudo-element|pub/sub|pubsub|pull request|query params|query plan|query string|quicksort|"
    "race condition|rate limiter|rate limiting|rbac|re-render|re-renders|read replica|rebase|red-black tree|refactor|"
    "references and pointers|refresh token|regex pattern|register map|remote branch|replication lag|request timeout|"
    "requests library|rerender|rerenders|responsive layout|resque|rest client|rest endpoint|retry with backoff|"
    "return code|reverse proxy|rounding error in float|row lock|rq worker|rstudio|rsync|rtos|runtime error|"
    "saga pattern|schema drift|schema migration|scp|scrapy|screen reader support|sdk|segfaults|selinux|"
    "semantic versioning|semaphore|semaphores|semver|seq scan|serial monitor|serialization|serialize|"
    "server-side rendering|service worker|session cookie|sessionstorage|sftp|shadow dom|shallow copy|sharding|"
    "shell script|shiny app|shortcode|sidekiq|sigint|sigkill|signal handler|sigsegv|sigterm|simulink|single page app|"
    "single threaded|single-threaded|singleton|sliding window|slurm|snakemake|snapshot test|socket.io|"
    "solid principles|source map|sourcemap|space complexity|spinlock|squash commits|ssh tunnel|ssr|stack allocation|"
    "stack trace|stacktrace|state management|static analysis|status code|stored procedure|stored procedures|"
    "submodule|submodules|subnet|subqueries|subquery|sudoers|symlink|symlinks|syntax error|syslog|systemd unit|"
    "tabindex|tar.gz|tarball|task queue|tcp socket|tdd|tech debt|technical debt|terminal command|test coverage|"
    "test suite|thread pool|threadpool|tidyverse|time complexity|timed out after|tokenization|tokenizer|"
    "too many open files|topological sort|train/test split|trait bound|trait object|transaction isolation|"
    "transitive dependency|transpile|transpiler|tree shaking|trie|trigger function|trunk-based|ts error|two pointers|"
    "type annotation|type annotations|type error|type hint|type hints|type inference|typeerror|typescript error|"
    "typescript types|udp socket|ufw|ulimit|undefined reference|unicode error|union find|unit file|unit testing|"
    "unmarshal|upsert|upstream branch|url encoding|urllib3|usecallback|usecontext|usememo|user-agent|useref|utf-8|"
    "utf8|vector database|venv|viewport meta|virtual dom|virtual function|virtualenv|volume mount|vtable|web scraper|"
    "web scraping|web worker|webhook|webhook handler|webhooks|websocket server|wildcard pattern|window function|"
    "window functions|woocommerce|worker process|wp-admin|wp_query|xmlhttprequest|xpath|yarn add|z-index|"
    "zombie process|zshrc")

# Python builtins and standard-library modules that are not everyday English words.
_EVERYDAY = frozenset(
    "abc array calendar chunk cmd code codecs collections copy csv curses decimal email enum fractions glob "
    "html http io json keyword locale logging mailbox math numbers operator os platform profile queue random re "
    "resource sched secrets select signal site stat statistics string struct sys this time token trace "
    "turtle types typing warnings wave xml abs all any ascii bin bool compile complex copyright credits dir "
    "exit filter float format hash help hex id input int iter license list map max min next object oct open "
    "ord pow print property quit range round set slice sorted str sum super tuple type vars zip nt grp pwd pty "
    "tty uu nis imp dis dbm bdb cgi runpy crypt test antigravity warning exception bytes reversed exec locals "
    "pickle shelve inspect concurrent pipes bisect readline socket".split())


# Python's module, builtin and exception names (sys.stdlib_module_names and builtins of Python
# 3.11, the interpreter the learned stage was trained with), less _EVERYDAY. Written out rather
# than read at import: 3.12 dropped distutils, 3.13 adds exceptions, and the same prompt must
# get the same decision on every Python.
PYTHON_NAMES = tuple((
    "aifc aiter anext argparse arithmeticerror assertionerror ast asynchat asyncio asyncore "
    "atexit attributeerror audioop base64 baseexception binascii blockingioerror breakpoint "
    "brokenpipeerror buffererror builtins bytearray byteswarning bz2 callable cgitb "
    "childprocesserror chr classmethod cmath codeop colorsys compileall configparser "
    "connectionabortederror connectionerror connectionrefusederror connectionreseterror "
    "contextlib contextvars copyreg cprofile ctypes dataclasses datetime delattr "
    "deprecationwarning dict difflib distutils divmod doctest encodings encodingwarning ensurepip "
    "enumerate environmenterror eoferror errno eval faulthandler fcntl filecmp fileexistserror "
    "fileinput filenotfounderror floatingpointerror fnmatch frozenset ftplib functools "
    "futurewarning gc genericpath getattr getopt getpass gettext globals graphlib gzip hasattr "
    "hashlib heapq hmac idlelib imaplib imghdr importerror importlib importwarning "
    "indentationerror indexerror interruptederror ioerror ipaddress isadirectoryerror isinstance "
    "issubclass itertools keyerror len lib2to3 linecache lookuperror lzma mailcap marshal "
    "memoryerror memoryview mimetypes mmap modulefinder modulenotfounderror msilib msvcrt "
    "multiprocessing nameerror netrc nntplib notadirectoryerror notimplementederror ntpath "
    "nturl2path opcode optparse oserror ossaudiodev overflowerror pathlib pdb "
    "pendingdeprecationwarning permissionerror pickletools pkgutil plistlib poplib posix "
    "posixpath pprint processlookuperror pstats py_compile pyclbr pydoc pydoc_data pyexpat quopri "
    "recursionerror referenceerror repr reprlib resourcewarning rlcompleter runtimeerror "
    "runtimewarning selectors setattr shlex shutil smtpd smtplib sndhdr socketserver spwd sqlite3 "
    "sre_compile sre_constants sre_parse ssl staticmethod stringprep subprocess sunau symtable "
    "syntaxerror syntaxwarning sysconfig syslog systemerror taberror tabnanny tarfile telnetlib "
    "tempfile termios textwrap threading timeit timeouterror tkinter tokenize tomllib traceback "
    "tracemalloc turtledemo typeerror unboundlocalerror unicodedata unicodedecodeerror "
    "unicodeencodeerror unicodeerror unicodetranslateerror unicodewarning unittest urllib "
    "userwarning uuid valueerror venv weakref webbrowser winreg winsound wsgiref xdrlib xmlrpc "
    "zerodivisionerror zipapp zipfile zipimport zlib zoneinfo "
).split())


def python_names() -> str:
    return "|".join(PYTHON_NAMES)