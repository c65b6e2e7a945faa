using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Pipeline;

namespace RetriKT.Evaluation;

/// <summary>
/// The baseline an ML.NET user gets with no RetriKT at all: <c>FeaturizeText</c> (word and character n-grams) +
/// <c>LbfgsMaximumEntropy</c> (L1 0, L2 0.01) trained on the same few-shot split, scored on the same test split.
/// Pair tasks featurize both texts and concatenate the vectors.
/// </summary>
public static class MlNetBaseline
{
    public const string Description = "FeaturizeText + LbfgsMaximumEntropy (l1 0, l2 0.01), few-shot train split only";
    public const string ConfigKey = "featurizetext-lbfgs-l2-0.01-v1";

    public static ClassificationScores Evaluate(FewShotTask task, int seed)
    {
        var ml = new MLContext(seed: seed);
        var keyData = ml.Data.LoadFromEnumerable(task.Labels.Select(l => new LabelValue { Label = l }));
        var train = ml.Data.LoadFromEnumerable(task.Train);
        var test = ml.Data.LoadFromEnumerable(task.Test.Where(r => task.Labels.Contains(r.Label)).ToList());
        IEstimator<ITransformer> features = task.IsPair
            ? ml.Transforms.Text.FeaturizeText("F1", nameof(TextPairRow.Text))
                .Append(ml.Transforms.Text.FeaturizeText("F2", nameof(TextPairRow.Text2)))
                .Append(ml.Transforms.Concatenate("Features", "F1", "F2"))
            : ml.Transforms.Text.FeaturizeText("Features", nameof(TextPairRow.Text));
        var pipeline = ml.Transforms.Conversion.MapValueToKey("Label", nameof(TextPairRow.Label), keyData: keyData)
            .Append(features)
            .Append(ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy(new Microsoft.ML.Trainers.LbfgsMaximumEntropyMulticlassTrainer.Options
            {
                L1Regularization = 0, L2Regularization = 0.01f,
            }));
        var model = pipeline.Fit(train);
        var predictions = model.Transform(test);
        var gold = predictions.GetColumn<uint>("Label").Select(k => (int)k - 1).ToList();
        var predicted = predictions.GetColumn<uint>("PredictedLabel").Select(k => (int)k - 1).ToList();
        return ClassificationScores.FromPredictions(gold, predicted, task.Labels.Count);
    }

    private sealed class LabelValue
    {
        public string Label { get; set; } = "";
    }
}
