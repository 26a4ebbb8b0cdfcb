"""A tuned generator as an MLflow pyfunc model: logged with its weights, loaded back, asked to write.

    model = mlflow.pyfunc.load_model("models:/evoforge-opinions@champion")
    model.predict(pd.DataFrame({"prompt": ["Write a positive opinion about carrots."]}), params={"max_new_tokens": 40})
"""

import mlflow
import pandas as pd

from models.backend import SamplingSettings

ARTIFACT_KEY = "weights"
# Input: a `prompt` column; output: one text per prompt; sampling settings as params with these defaults.
SIGNATURE = mlflow.models.infer_signature(
    pd.DataFrame({"prompt": ["Write a short opinion about carrots."]}),
    ["Carrots are great."],
    params={"max_new_tokens": 64, "temperature": 0.8, "top_p": 0.95, "seed": 0},
)


class TunedGenerator(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from models.transformers_backend import TransformersBackend

        self.backend = TransformersBackend(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input, params=None):
        prompts = model_input["prompt"].tolist() if isinstance(model_input, pd.DataFrame) else list(model_input)
        params = params or {}
        settings = SamplingSettings(
            temperature=float(params.get("temperature", 0.8)),
            top_p=float(params.get("top_p", 0.95)),
            max_new_tokens=int(params.get("max_new_tokens", 64)),
        )
        outs = self.backend.generate(
            [self.backend.chat_prompt(p) for p in prompts], [settings] * len(prompts), seed=params.get("seed")
        )
        return [o.text for o in outs]


def _resumed(tracking_uri: str, run_id: str):
    """The fluent API's context for an existing run. The run's own experiment is made the active one first: MLflow
    refuses to resume a run of another experiment than one set earlier in the process (a benchmark's
    `set_experiment`, say), and this model belongs to the run, whatever was set before."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment_id=mlflow.tracking.MlflowClient(tracking_uri).get_run(run_id).info.experiment_id)
    return mlflow.start_run(run_id=run_id)


def log_generator(tracking_uri: str, run_id: str, weights_dir: str, registered_name: str | None) -> tuple[str, str | None]:
    """Log the checkpoint folder as a pyfunc model in the run (and register it). Returns (model URI, version)."""
    with _resumed(tracking_uri, run_id):
        info = mlflow.pyfunc.log_model(
            name="tuned_generator",
            python_model=TunedGenerator(),
            artifacts={ARTIFACT_KEY: str(weights_dir)},
            pip_requirements=["evoforge", "torch==2.13.0", "transformers==5.23.0", "peft==0.21.2"],
            registered_model_name=registered_name,
            signature=SIGNATURE,
        )
    # Leaving the `with` block marked the run FINISHED; the flow it belongs to is still going.
    mlflow.tracking.MlflowClient(tracking_uri).update_run(run_id, status="RUNNING")
    version = str(info.registered_model_version) if info.registered_model_version is not None else None
    return info.model_uri, version


def log_value_model(tracking_uri: str, run_id: str, model, registered_name: str | None) -> tuple[str, str | None]:
    """Log a fitted value model (models.value_model) in the run as an MLflow sklearn-flavour model (pickled: it
    is our own object, loaded back by our own code) and register it. Returns (model URI, version)."""
    with _resumed(tracking_uri, run_id):
        info = mlflow.sklearn.log_model(model, name="value_model", registered_model_name=registered_name,
                                        serialization_format="pickle")
    version = str(info.registered_model_version) if info.registered_model_version is not None else None
    return info.model_uri, version
