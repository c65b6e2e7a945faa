// Runtime-only serving app: loads a RetrievalClassifier model.zip with a plain mlContext.Model.Load and predicts, with
// nothing of TorchSharp deployed. Usage:
//   RetriKT.MLNet.RuntimeOnly <model.zip> <texts.txt>          one line of scores per input line (round-trip floats)
//   RetriKT.MLNet.RuntimeOnly <model.zip> <texts.txt> --latency N   single-row PredictionEngine latency over N calls
// Exit codes: 0 ok, 2 usage, 3 a TorchSharp assembly was loaded, 4 load or predict failed (one line on stderr).
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;

if (args.Length is not (2 or 4) || (args.Length == 4 && args[2] != "--latency"))
{
    Console.Error.WriteLine("usage: RetriKT.MLNet.RuntimeOnly <model.zip> <texts.txt> [--latency N]");
    return 2;
}
try
{
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
