using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet;
using RetriKT.MLNet.Common;

namespace RetriKT.WebApi;

/// <summary>
/// A small standard ML.NET text classifier (FeaturizeText + SdcaMaximumEntropy) with the sample's contract, for
/// running the server before a RetriKT model exists, and for the tests and the benchmark.
/// </summary>
public static class DemoTextClassifier
{
    /// <summary>Trains on a tab-separated file with a header naming a <c>sentence</c> (or <c>text</c>) and a <c>label</c> column (SST-2 / GLUE layout), in any order.</summary>
    /// <param name="mlContext">The context (its seed makes training reproducible).</param>
    /// <param name="tsvPath">The training file.</param>
    /// <param name="maximumNumberOfIterations">SDCA iterations.</param>
    /// <returns>The model and the input schema to save it with.</returns>
    public static (ITransformer Model, DataViewSchema InputSchema) Train(MLContext mlContext, string tsvPath, int maximumNumberOfIterations = 10)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        if (!File.Exists(tsvPath)) throw new FileNotFoundException($"Training file '{tsvPath}' does not exist.", tsvPath);
        var (text, label) = Columns(tsvPath);
        var data = mlContext.Data.LoadFromTextFile(tsvPath, [
            new TextLoader.Column("Text", DataKind.String, text),
            new TextLoader.Column("LabelText", DataKind.String, label),
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

    /// <summary>
    /// The positions of the text (<c>sentence</c> or <c>text</c>) and <c>label</c> columns, found by their names in the
    /// header: read by position, a file with the label first trained on the labels as texts and saved a model that answers
    /// with sentences. The rows are read too (as UTF-8), so a bad file fails here with one line naming it and the line.
    /// </summary>
    private static (int Text, int Label) Columns(string path)
    {
        var lines = Utf8TextFile.ReadAllLines(path);
        if (lines.Length == 0) throw new InvalidDataException($"{path}: the file is empty; expected a tab-separated header row with 'sentence' and 'label', then examples.");
        var header = lines[0].TrimStart('\uFEFF').Split('\t');
        string format = header.Length == 1 && header[0].Contains(',') ? " (the file looks comma-separated; expected tab-separated)" : "";
        int Column(string name, string? other = null) => Array.IndexOf(header, name) is var i and >= 0 ? i
            : other is not null && Array.IndexOf(header, other) is var j and >= 0 ? j
            : throw new InvalidDataException($"{path} line 1: column '{name}'{(other is null ? "" : $" (or '{other}')")} not found in header [{string.Join(", ", header)}]{format}.");
        int text = Column("sentence", "text"), label = Column("label");
        int rows = 0;
        for (int line = 1; line < lines.Length; line++)
        {
            if (lines[line].Length == 0) continue;
            var fields = lines[line].Split('\t');
            if (fields.Length <= Math.Max(text, label))
                throw new InvalidDataException($"{path} line {line + 1}: expected {header.Length} tab-separated fields (the header's), found {fields.Length}.");
            if (fields[label].Trim().Length == 0) throw new InvalidDataException($"{path} line {line + 1}: the label (column '{header[label]}') is empty.");
            rows++;
        }
        return rows > 0 ? (text, label) : throw new InvalidDataException($"{path}: holds no examples.");
    }

    /// <summary>Trains and writes model.zip atomically (temp file + rename), as a deployment should.</summary>
    public static void TrainAndSave(string tsvPath, string modelPath, int maximumNumberOfIterations = 10, int seed = 1)
    {
        var mlContext = new MLContext(seed);
        var (model, schema) = Train(mlContext, tsvPath, maximumNumberOfIterations);
        mlContext.Model.SaveAtomically(model, schema, modelPath);
    }
}
