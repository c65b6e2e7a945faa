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

    /// <summary>
    /// Writes a valid model.zip whose input fits the sample's contract but which has no <c>Score</c> column: its
    /// <c>PredictedLabel</c> is a copy of the input text. ML.NET binds it without complaint, answering with the text as
    /// the label and no scores.
    /// </summary>
    public static string SaveModelWithoutScore(string directory)
    {
        var ml = new MLContext(0);
        var data = ml.Data.LoadFromEnumerable(new[] { new TextInput { Text = "good" } });
        var model = ml.Transforms.CopyColumns("PredictedLabel", "Text").Fit(data);
        var path = Path.Combine(directory, "no-score.zip");
        ml.Model.Save(model, data.Schema, path);
        return path;
    }

    /// <summary>
    /// <paramref name="model"/> rewritten with its parts stored uncompressed and one byte in the middle of its largest
    /// part changed: the zip opens and the part reads, but its CRC-32 no longer matches (a bit flipped on disk or in
    /// transit). ML.NET does not check the CRC.
    /// </summary>
    public static byte[] Damaged(byte[] model)
    {
        var parts = new List<(string Name, byte[] Data)>();
        using (var zip = new System.IO.Compression.ZipArchive(new MemoryStream(model)))
            foreach (var entry in zip.Entries)
            {
                using var data = entry.Open();
                using var copy = new MemoryStream();
                data.CopyTo(copy);
                parts.Add((entry.FullName, copy.ToArray()));
            }
        var stored = new MemoryStream();
        using (var zip = new System.IO.Compression.ZipArchive(stored, System.IO.Compression.ZipArchiveMode.Create, leaveOpen: true))
            foreach (var (name, data) in parts)
            {
                using var write = zip.CreateEntry(name, System.IO.Compression.CompressionLevel.NoCompression).Open();
                write.Write(data);
            }
        var bytes = stored.ToArray();
        var largest = parts.MaxBy(p => p.Data.Length).Data;
        int at = bytes.AsSpan().IndexOf(largest.AsSpan(largest.Length / 2, 64)); // stored: the part's bytes appear as they are
        if (at < 0) throw new InvalidOperationException("the stored part was not found in the zip");
        bytes[at] ^= 0x01;
        return bytes;
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
