# Do'BaaS. `make demo` and `make test` set up everything they need on a fresh Debian 12 (as root).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT := .ci/apt-install
# Debian packages: building the venv, and what the test suite runs against (util-linux: mount for the disk-full test)
BASE_PKGS := python3 python3-venv python3-dev gcc make util-linux
# the kvm plugin: libvirt + QEMU, libnbd's Python module, and what building libvirt-python needs
KVM_PKGS := libvirt-daemon-system libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils python3-libnbd \
	libvirt-dev pkg-config
# the mysql plugin's tests: a real MariaDB server and its clients (mariadb-binlog for the archived logs)
MYSQL_PKGS := mariadb-server mariadb-client mariadb-backup
# the remote vault's tests: a real OpenSSH server, and ext4 volumes for per-tenant quotas
SFTP_PKGS := openssh-server openssh-client e2fsprogs
# the vmware plugin's tests: govmomi's vSphere simulator, built from Debian's Go sources (no module download)
VMWARE_PKGS := golang-go golang-github-vmware-govmomi-dev
# export, mount and destroy: FUSE, qemu-img for the image formats, GNU tar + bsdtar + rsync to check exported
# archives, xfsprogs/ntfs-3g for the filesystems mounted out of disk images
EXPORT_PKGS := fuse3 fdisk qemu-utils libarchive-tools rsync tar xfsprogs ntfs-3g e2fsprogs
# the portal's browser tests: Debian's Chromium driven by Playwright
PORTAL_PKGS := chromium fonts-liberation
TEST_PKGS := $(BASE_PKGS) $(EXPORT_PKGS) $(PORTAL_PKGS) samba samba-vfs-modules acl postgresql poppler-utils $(SFTP_PKGS) $(KVM_PKGS) $(MYSQL_PKGS) $(VMWARE_PKGS)
BENCH_PKGS := $(BASE_PKGS) restic samba samba-vfs-modules qemu-utils $(MYSQL_PKGS) $(SFTP_PKGS) $(VMWARE_PKGS)

.PHONY: install install-plugins install-deploy compile demo test lint bench man wheel clean

install: $(BIN)/.installed

# libvirt-python builds against Debian's libvirt; Debian's libnbd module (python3-libnbd, same Python ABI) is
# linked into the virtualenv (the PyPI package named "nbd" is unrelated)
install-plugins: $(BIN)/.installed-plugins

$(BIN)/.installed-plugins: $(BIN)/.installed
	@$(APT) $(BASE_PKGS) $(KVM_PKGS) $(MYSQL_PKGS)
	@$(BIN)/python -m pip install -q -e '.[test,kvm,mysql,vmware,hyperv,mssql,oracle,s3,s3test,portal]' 2>&1 | grep -v "^WARNING: Location" || true
	@site=$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	  for f in /usr/lib/python3/dist-packages/nbd.py /usr/lib/python3/dist-packages/libnbdmod.cpython-*.so; do \
	    ln -sf $$f $$site/; done
	@$(BIN)/python -c "import libvirt, nbd, mysql.connector, pyVmomi, winrm, spnego, pyvhdi, pymssql, boto3, oracledb, fastapi, argon2, playwright" && test -x $(BIN)/weed && touch $@

# Ansible (with the ansible.posix/windows collections) and ansible-lint, for ansible/ and its tests
install-deploy: $(BIN)/.installed-deploy

$(BIN)/.installed-deploy: $(BIN)/.installed
	@$(BIN)/python -m pip install -q -e '.[test,deploy]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/ansible-playbook --version >/dev/null && $(BIN)/ansible-lint --version >/dev/null && touch $@

$(BIN)/.installed: pyproject.toml
	@$(APT) $(BASE_PKGS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python -m pip install -q -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python -c "import orchestrator.cli.main" && touch $@

# byte-compile once: start-up time matters for every scheduled run (PYTHONDONTWRITEBYTECODE may be set)
compile: install
	@$(BIN)/python -m compileall -q orchestrator plugins >/dev/null

demo: install compile
	$(BIN)/dobaas demo

# ruff, the type checker (a `# type: ignore` that hides nothing fails), and the import contracts of pyproject.toml
lint: install install-deploy
	$(BIN)/ruff check orchestrator plugins tests
	$(BIN)/mypy
	PYTHONPATH=. $(BIN)/lint-imports
	cd ansible && ../$(BIN)/ansible-lint --project-dir . --profile production -q .

# the wheel the Ansible agent role installs at client sites (dist/dobaas-VERSION-py3-none-any.whl)
wheel: install
	rm -rf build
	$(BIN)/python -m pip wheel -q --no-deps -w dist .

test: install install-plugins install-deploy compile lint
	@$(APT) $(TEST_PKGS)
	$(BIN)/python -m pytest -q --durations=25

bench: install install-plugins compile
	@$(APT) $(BENCH_PKGS)
	@# every benchmark runs; the target fails if any of them missed a target
	@$(BIN)/python tests/bench/bench_image.py; a=$$?; $(BIN)/python tests/bench/bench_files.py; b=$$?; \
	  $(BIN)/python tests/bench/bench_kvm.py; c=$$?; $(BIN)/python tests/bench/bench_mysql.py; d=$$?; \
	  $(BIN)/python tests/bench/bench_sftp.py; e=$$?; $(BIN)/python tests/bench/bench_vmware.py; f=$$?; \
	  $(BIN)/python tests/bench/bench_hyperv.py; g=$$?; $(BIN)/python tests/bench/bench_sqlserver.py; h=$$?; \
	  $(BIN)/python tests/bench/bench_s3.py; i=$$?; $(BIN)/python tests/bench/bench_index.py; j=$$?; \
	  rm -rf .bench-index; $(BIN)/python tests/bench/bench_export.py; k=$$?; rm -rf .bench-export; \
	  $(BIN)/python tests/bench/bench_portal.py; l=$$?; rm -rf .bench-portal; \
	  exit $$((a | b | c | d | e | f | g | h | i | j | k | l))

# the manual page, generated from the commands' own help
man: install
	$(BIN)/dobaas man > docs/dobaas.1

clean:
	rm -rf $(VENV) dist build .bench .bench-files .bench-kvm .bench-mysql .bench-sftp .bench-vmware .bench-hyperv .bench-sqlserver .bench-export .bench-portal .pytest_cache \
	  .ruff_cache .mypy_cache .hypothesis
