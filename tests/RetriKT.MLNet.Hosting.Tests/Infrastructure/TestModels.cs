using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.WebApi;

namespace RetriKT.MLNet.Hosting.Tests.Infrastructure;

/// <summary>
/// Two real text classifiers (FeaturizeText + SdcaMaximumEntropy) trained once per test run on SST-2 16-shot data:
/// v1 on train.tsv (10 iterations), v2 on dev.tsv (20 iterations), so their answers differ after a swap.
/// </summary>
public static class TestModels
{
    private static readonly Lazy<(ITransformer V1, ITransformer V2, DataViewSchema Schema)> Trained = new(() =>
    {
        var dir = SharedData.Path("data", "SST-2", "k-shot", "16-13");
        var v1 = DemoTextClassifier.Train(new MLContext(1), Path.Combine(dir, "train.tsv"), 10);
        var v2 = DemoTextClassifier.Train(new MLContext(2), Path.Combine(dir, "dev.tsv"), 20);
        return (v1.Model, v2.Model, v1.InputSchema);
    });

    /// <summary>Sentences the tests ask about: real SST-2 sentences (both files) plus a few unseen ones.</summary>
    public static IReadOnlyList<string> Sentences { get; } = LoadSentences();

    private static IReadOnlyList<string> LoadSentences()
    {
        if (SharedData.Root is null) return [];
        var dir = SharedData.Path("data", "SST-2", "k-shot", "16-13");
        return File.ReadLines(Path.Combine(dir, "train.tsv")).Skip(1).Take(12)
            .Concat(File.ReadLines(Path.Combine(dir, "dev.tsv")).Skip(1).Take(12))
            .Select(l => l.Split('\t')[0])
            .Concat(["a wonderful , moving film .", "dull and boring .", "the worst movie of the year ."])
            .ToArray();
    }

    /// <summary>Writes v1 and v2 into <paramref name="directory"/> with a disposal probe tagged <c>{tag}-v1</c>/<c>{tag}-v2</c>.</summary>
    public static (string V1, string V2) Save(string directory, string tag)
    {
        var (m1, m2, schema) = Trained.Value;
        var ml = new MLContext(0);
        var v1 = Path.Combine(directory, "v1.zip");
        var v2 = Path.Combine(directory, "v2.zip");
        ml.Model.Save(new TransformerChain<ITransformer>(m1, new DisposalProbeTransformer($"{tag}-v1")), schema, v1);
        ml.Model.Save(new TransformerChain<ITransformer>(m2, new DisposalProbeTransformer($"{tag}-v2")), schema, v2);
        return (v1, v2);
    }

    /// <summary>Writes a valid model.zip that does not fit the sample's contract (its input column is not <c>Text</c>).</summary>
    public static string SaveWrongSchemaModel(string directory)
    {
        var ml = new MLContext(0);
        var data = ml.Data.LoadFromEnumerable(new[] { new { Review = "good", Stars = 1f } });
        var model = ml.Transforms.Text.FeaturizeText("Features", "Review").Fit(data);
        var path = Path.Combine(directory, "wrong-schema.zip");
        ml.Model.Save(model, data.Schema, path);
        return path;
    }

    /// <summary>Answers of a model file, one engine, one sentence after another (the reference for concurrent answers).</summary>
    public static Dictionary<string, Answer> SequentialAnswers(string modelPath)
    {
        var ml = new MLContext(0);
        var model = ml.Model.Load(modelPath, out _);
        using var engine = ml.Model.CreatePredictionEngine<TextInput, TextPrediction>(model);
        var answers = Sentences.ToDictionary(s => s, s =>
        {
            var p = engine.Predict(new TextInput { Text = s });
            return new Answer(p.PredictedLabel, p.Score.ToArray());
        });
        return answers;
    }

    /// <summary>Atomic deployment: write next to the target, then rename over it.</summary>
    public static void DeployByRename(string source, string target)
    {
        var temp = target + ".incoming";
        File.Copy(source, temp, overwrite: true);
        File.Move(temp, target, overwrite: true);
    }
}

/// <summary>A label and its score vector, compared exactly (same model, same input, same code path).</summary>
public sealed record Answer(string Label, float[] Scores)
{
    public bool Matches(string label, IEnumerable<float> scores) => label == Label && scores.SequenceEqual(Scores);
}
