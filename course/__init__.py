"""Course tooling, apart from the lesson code: the papermill runner behind `make run` (`run`), learner copies and exercise checks (`notebooks`)."""
