// Runtime-only serving app: loads a RetrievalClassifier model.zip with a plain mlContext.Model.Load and predicts, with
// nothing of TorchSharp deployed. Usage:
//   RetriKT.MLNet.RuntimeOnly <model.zip> <texts.txt>          one line of scores per input line (round-trip floats)
//   RetriKT.MLNet.RuntimeOnly <model.zip> <texts.txt> --latency N   single-row PredictionEngine latency over N calls
//   RetriKT.MLNet.RuntimeOnly --keys <encoder.dll|hf-dir> <texts.txt>
//       pretrained BERT retrieval keys in managed code: a knowledge store keyed with ManagedBertSentenceEncoder, the
//       texts as KnowledgeRetriever queries; one line per text: top-1 entry id, then the embedding (round-trip floats)
// Exit codes: 0 ok, 2 usage, 3 a TorchSharp assembly was loaded, 4 load or predict failed (one line on stderr).
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Knowledge;

bool keys = args.Length == 3 && args[0] == "--keys";
if (!keys && (args.Length is not (2 or 4) || (args.Length == 4 && args[2] != "--latency")))
{
    Console.Error.WriteLine("usage: RetriKT.MLNet.RuntimeOnly <model.zip> <texts.txt> [--latency N] | --keys <encoder.dll|hf-dir> <texts.txt>");
    return 2;
}
try
{
    if (keys) return RetrievalKeys(args[1], args[2]);
    var ml = new MLContext(seed: 1);
    var model = ml.Model.Load(args[0], out _);
    var texts = File.ReadAllLines(args[1]);
    using var engine = ml.Model.CreatePredictionEngine<TextInput, ScoreOutput>(model);
    if (args.Length == 4)
    {
        int calls = int.Parse(args[3], CultureInfo.InvariantCulture);
        for (int i = 0; i < Math.Min(200, calls); i++) engine.Predict(new TextInput { Text = texts[i % texts.Length] }); // warm-up
        var micros = new double[calls];
        for (int i = 0; i < calls; i++)
        {
            long start = Stopwatch.GetTimestamp();
            engine.Predict(new TextInput { Text = texts[i % texts.Length] });
            micros[i] = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
        }
        Array.Sort(micros);
        Console.WriteLine(FormattableString.Invariant($"single-row predict over {calls} calls: p50 {micros[calls / 2]:F1} µs, p99 {micros[(int)(calls * 0.99)]:F1} µs"));
        var batch = Enumerable.Range(0, 2000).Select(i => new TextInput { Text = texts[i % texts.Length] }).ToList();
        long t0 = Stopwatch.GetTimestamp();
        int rows = model.Transform(ml.Data.LoadFromEnumerable(batch)).GetColumn<float[]>("Score").Count();
        Console.WriteLine(FormattableString.Invariant($"batched Transform: {rows / Stopwatch.GetElapsedTime(t0).TotalSeconds:F0} rows/s over {rows} rows"));
    }
    else
    {
        foreach (var text in texts)
            Console.WriteLine(string.Join(' ', engine.Predict(new TextInput { Text = text }).Score.Select(s => s.ToString("R", CultureInfo.InvariantCulture))));
    }
    var torch = AppDomain.CurrentDomain.GetAssemblies().Select(a => a.GetName().Name).Where(n => n?.StartsWith("TorchSharp", StringComparison.Ordinal) == true).ToList();
    if (torch.Count > 0)
    {
        Console.Error.WriteLine($"TorchSharp was loaded: {string.Join(", ", torch)}");
        return 3;
    }
    return 0;
}
catch (Exception e)
{
    Console.Error.WriteLine($"{e.GetType().Name}: {e.Message}");
    return 4;
}

/// <summary>The texts as a store keyed with the managed BERT encoder, then as retriever queries (see the usage above).</summary>
static int RetrievalKeys(string encoderSource, string textsPath)
{
    var ml = new MLContext(seed: 1);
    var encoder = ManagedBertSentenceEncoder.Load(encoderSource);
    var texts = File.ReadAllLines(textsPath);
    var store = new KnowledgeStore(["a", "b"], texts.Select((t, i) => KnowledgeEntry.Gold(t, null, i % 2, 2))).WithEmbeddings(encoder);
    var queries = encoder.Embed(texts);
    var schema = SchemaDefinition.Create(typeof(QueryRow));
    schema[nameof(QueryRow.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, encoder.Dimension);
    var data = ml.Data.LoadFromEnumerable(queries.Select(q => new QueryRow { Features = q }), schema);
    var top = ml.RetriKT().KnowledgeRetriever(store, k: 1).Fit(data).Transform(data)
        .GetColumn<VBuffer<int>>("NeighborIds").Select(v => v.GetValues()[0]).ToList();
    for (int i = 0; i < texts.Length; i++)
        Console.WriteLine(top[i].ToString(CultureInfo.InvariantCulture) + " " + string.Join(' ', queries[i].Select(x => x.ToString("R", CultureInfo.InvariantCulture))));
    var torch = AppDomain.CurrentDomain.GetAssemblies().Select(a => a.GetName().Name).Where(n => n?.StartsWith("TorchSharp", StringComparison.Ordinal) == true).ToList();
    if (torch.Count == 0) return 0;
    Console.Error.WriteLine($"TorchSharp was loaded: {string.Join(", ", torch)}");
    return 3;
}

/// <summary>A retriever query: an embedding.</summary>
internal sealed class QueryRow
{
    public float[] Features { get; set; } = [];
}

/// <summary>Input row: the text column the model was trained on.</summary>
internal sealed class TextInput
{
    public string Text { get; set; } = "";
}

/// <summary>Output row: the probability per label.</summary>
internal sealed class ScoreOutput
{
    public float[] Score { get; set; } = [];
}
