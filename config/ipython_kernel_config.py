# Installed by `make install` into .venv/etc/ipython/, where every IPython kernel of the venv
# reads it (JupyterLab, papermill, nbval).
#
# Jupyter's clients (nbclient, nbval) start kernels on loopback TCP, and ipykernel 7 logs
# "Kernel is running over TCP without encryption" at every start. On 127.0.0.1, inside one
# user's session, there is nobody to eavesdrop, so the course sets the kernel application's own
# log level to ERROR instead of filtering the output: real kernel errors still show.
c = get_config()  # noqa: F821
c.IPKernelApp.log_level = "ERROR"
