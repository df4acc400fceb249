"""Deployment to SageMaker Pipelines through kedro-sagemaker 0.4.0.

kedro-sagemaker turns every Kedro node into a SageMaker Pipelines step. This package
holds what the project adds to it, in five small modules:

* ``config``: loads ``conf/<env>/sagemaker.yml`` with ``${env:NAME,default}`` and a
  git-ignored ``conf/local/sagemaker.yml`` overlay, and checks the settings, the AWS
  region and credentials, so that ``compile``/``run`` stop with one message listing
  every problem (before anything is uploaded or created);
* ``resources``: instance type, count and volume per node, looked up by node name, then
  by node tag, then ``__default__``;
* ``path_parameters``: catalog locations that each execution chooses through a named
  SageMaker pipeline parameter (``raw_export``: the raw export);
* ``generation``: what keeps generating the pipeline fast (the catalog read once, the
  SageMaker SDK's defaults schema checked once);
* ``plugin``: subclasses of the plugin's ``KedroContextManager`` and
  ``KedroSageMakerGenerator`` that use the above, and ``context_and_pipeline``, which
  the project's ``kedro sagemaker`` group (``tsa_kedro.cli``) generates pipelines with.
  The plugin itself is left as installed.
"""
