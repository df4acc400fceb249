"""Deployment to SageMaker Pipelines through kedro-sagemaker 0.4.0.

kedro-sagemaker turns every Kedro node into a SageMaker Pipelines step. This package
holds what the project adds to it, in three small modules:

* ``config``: loads ``conf/<env>/sagemaker.yml`` with ``${env:NAME,default}`` and a
  git-ignored ``conf/local/sagemaker.yml`` overlay, and stops ``compile``/``run`` with a
  clear message when the bucket, the execution role or the image is missing or still a
  placeholder (before anything is uploaded or created);
* ``resources``: instance type, count and volume per node, looked up by node name, then
  by node tag, then ``__default__``;
* ``plugin``: installs the above into the plugin (see ``install``); Kedro imports
  ``tsa_kedro.cli`` on every ``kedro`` command in this project, which calls it.
"""
