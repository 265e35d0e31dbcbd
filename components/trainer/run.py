"""TFX Trainer entry point: `run_fn` only orchestrates (config -> data -> fit -> export)."""
import json
import os

import keras
import tensorflow_transform as tft
from absl import logging
from tfx.components.trainer.fn_args_utils import FnArgs

from components.trainer import data, ensemble, export, model as model_lib, recipe, training
from components.trainer.tuner import tuned_config
from pipeline import features
from pipeline.calibration import fit_temperature
from pipeline.config import TrainingConfig


def run_fn(fn_args: FnArgs) -> None:
    """Trains the configured model on the train split and exports the serving SavedModel."""
    config = tuned_config(TrainingConfig.from_dict(fn_args.custom_config), fn_args.hyperparameters)
    keras.utils.set_random_seed(config.seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    strategy = training.distribution_strategy()
    epoch = data.EpochNumber()   # each epoch's data order from the seed and its number
    train_ds, validation_ds, counts = data.make_datasets(
        fn_args.train_files, tf_transform_output, config.classes,
        config.batch_size * strategy.num_replicas_in_sync, config.validation_fraction, config.seed,
        imbalance=config.imbalance, epoch=epoch.variable)
    class_weight = recipe.class_weight_for(config, counts)
    logging.info("Training class counts %s; imbalance=%s; class weights %s",
                 dict(zip(config.classes, counts.tolist())), config.imbalance, class_weight)
    with strategy.scope():   # an ensemble's members too: their variables belong to the strategy
        members = ensemble.read_members(config.ensemble, config.classes) if config.ensemble else None
        network = (ensemble.build(members) if members else
                   model_lib.build(config.model, len(config.classes), config.pretrained_weights))
        if config.warm_start:
            model_lib.load_trained_weights(network, config.model, config.warm_start)
        model = model_lib.training_model(network, config) if config.epochs > 0 else network
    history, average = {}, None
    if config.epochs > 0:
        averager = recipe.WeightAverage(network, config.average_from) if config.average_from else None
        history = recipe.fit(model, network, train_ds, validation_ds, config, fn_args.model_run_dir,
                             checkpoint_dir=config.checkpoint_dir, class_weight=class_weight,
                             scope=strategy.scope, data_id=",".join(sorted(fn_args.train_files)),
                             extra_callbacks=[epoch] + ([averager] if averager else []))
        if averager:   # batch-norm statistics from one pass over the training faces
            average = recipe.keep_average(
                network, averager, train_ds.map(lambda pixels, label: pixels),
                lambda: {"validation_accuracy": model.evaluate(validation_ds, verbose=0,
                                                               return_dict=True)["accuracy"]})
        recipe.write_curves(history, os.path.join(fn_args.model_run_dir, recipe.CURVES_PNG),
                            f"{config.model}, {len(config.classes)} classes")
    if config.prior_correction > 0 and config.imbalance != "none":
        logging.warning("prior_correction %s on top of imbalance=%s corrects for the class prior "
                        "twice; it is meant for imbalance='none'", config.prior_correction,
                        config.imbalance)
    # The export's fits, on the validation carve-out with the prior correction in place.
    truth, one_view, mirrored = export.validation_probabilities(network, validation_ds)
    log_bias = recipe.prior_log_bias(counts, config.prior_correction)
    temperature, fitted_on = config.calibration_temperature, ""
    if temperature == 0:
        temperature = round(fit_temperature(truth, one_view, log_bias), 3)
        fitted_on = f"the Trainer's validation carve-out of train ({len(truth)} faces), least NLL"
        logging.info("Calibration temperature %s fitted on %d validation faces", temperature, len(truth))
    unsure = export.fitted_unsure_threshold(truth, one_view, mirrored, log_bias, temperature)
    unsure.setdefault("fitted_on", "the Trainer's validation carve-out of train, the lowest threshold within "
                      f"{export.UNSURE_TOLERANCE * 100:.1f} points of flipping every face's accuracy")
    logging.info("flip_when_unsure: threshold %s on %d validation faces", unsure["threshold"], unsure["faces"])
    export.export_serving_model(network, tf_transform_output, config.classes,
                                fn_args.serving_model_dir, config.prior_correction, counts.tolist(),
                                temperature, fitted_on,
                                ensemble.description(members) if members else None, unsure)
    with open(os.path.join(fn_args.model_run_dir, features.HISTORY_JSON), "w") as f:
        json.dump(history, f, indent=1)
    if average:
        with open(os.path.join(fn_args.model_run_dir, "weight_average.json"), "w") as f:
            json.dump(average, f, indent=1)
    with open(os.path.join(fn_args.model_run_dir, features.TRAINING_CONFIG_JSON), "w") as f:
        json.dump(config.to_dict(), f, indent=1)
    with open(os.path.join(fn_args.model_run_dir, features.CLASS_BALANCE_JSON), "w") as f:
        json.dump({"imbalance": config.imbalance, "prior_correction": config.prior_correction,
                   "calibration_temperature": temperature,
                   "train_counts": dict(zip(config.classes, counts.tolist())),
                   "class_weights": None if class_weight is None else
                   {config.classes[c]: round(w, 4) for c, w in class_weight.items()}}, f, indent=1)
    logging.info("Exported %s (%d classes, %d parameters, %.2f GFLOPs per image) to %s",
                 config.model, len(config.classes), network.count_params(),
                 model_lib.flops_per_image(network) / 1e9, fn_args.serving_model_dir)
