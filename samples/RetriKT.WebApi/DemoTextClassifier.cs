using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet;

namespace RetriKT.WebApi;

/// <summary>
/// A small standard ML.NET text classifier (FeaturizeText + SdcaMaximumEntropy) with the sample's contract, for
/// running the server before a RetriKT model exists, and for the tests and the benchmark.
/// </summary>
public static class DemoTextClassifier
{
    /// <summary>Trains on a tab-separated file with a header and columns <c>sentence</c>, <c>label</c> (SST-2 / GLUE layout).</summary>
    /// <param name="mlContext">The context (its seed makes training reproducible).</param>
    /// <param name="tsvPath">The training file.</param>
    /// <param name="maximumNumberOfIterations">SDCA iterations.</param>
    /// <returns>The model and the input schema to save it with.</returns>
    public static (ITransformer Model, DataViewSchema InputSchema) Train(MLContext mlContext, string tsvPath, int maximumNumberOfIterations = 10)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        if (!File.Exists(tsvPath)) throw new FileNotFoundException($"Training file '{tsvPath}' does not exist.", tsvPath);
        var data = mlContext.Data.LoadFromTextFile(tsvPath, [
            new TextLoader.Column("Text", DataKind.String, 0),
            new TextLoader.Column("LabelText", DataKind.String, 1),
        ], separatorChar: '\t', hasHeader: true, allowQuoting: false);
        // Map the label to a key outside the saved model, so serving needs only the Text column.
        var keyed = mlContext.Transforms.Conversion.MapValueToKey("Label", "LabelText").Fit(data).Transform(data);
        var model = mlContext.Transforms.Text.FeaturizeText("Features", "Text")
            // Explicit light L2: SDCA's automatic setting regularises a few dozen examples down to all-zero weights.
            .Append(mlContext.MulticlassClassification.Trainers.SdcaMaximumEntropy("Label", "Features",
                l2Regularization: 1e-4f, maximumNumberOfIterations: maximumNumberOfIterations))
            .Append(mlContext.Transforms.Conversion.MapKeyToValue("PredictedLabel"))
            .Fit(keyed);
        return (model, data.Schema);
    }

    /// <summary>Trains and writes model.zip atomically (temp file + rename), as a deployment should.</summary>
    public static void TrainAndSave(string tsvPath, string modelPath, int maximumNumberOfIterations = 10, int seed = 1)
    {
        var mlContext = new MLContext(seed);
        var (model, schema) = Train(mlContext, tsvPath, maximumNumberOfIterations);
        mlContext.Model.SaveAtomically(model, schema, modelPath);
    }
}
