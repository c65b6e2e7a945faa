// Serving benchmark: requests/s and p50/p99 latency of POST /predict on loopback (real Kestrel, bounded C# load
// client in the same process) versus direct PredictionEnginePool.Predict with the same concurrency, same model,
// same run, so the HTTP overhead is visible.
//
//   dotnet run -c Release --project bench/RetriKT.MLNet.Hosting.Bench -- [--model model.zip] [--clients 32]
//       [--requests 20000] [--max-seconds 30]
// Without --model, a small standard text classifier is trained on ../shared SST-2 16-shot data first.
using System.Diagnostics;
using System.Net.Http.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using RetriKT.MLNet.Benchmarks;
using RetriKT.MLNet.Hosting;
using RetriKT.WebApi;

Args options;
try { options = Args.Parse(args); }
catch (BenchUsageException e) // one line and exit 2 for a bad argument, as the samples do (int.Parse printed a stack trace)
{
    Console.Error.WriteLine(e.Message);
    return 2;
}
var modelPath = options.Model ?? TrainDemoModel();
var texts = LoadTexts();
Console.WriteLine($"model {modelPath} ({new FileInfo(modelPath).Length} bytes); {texts.Length} distinct texts; " +
                  $"{Environment.ProcessorCount} cores; clients {options.Clients}; requests {options.Requests}; cap {options.MaxSeconds} s");

await using var app = WebApiApp.Build(["--urls", "http://127.0.0.1:0", "--ModelPath", modelPath],
    b => b.Logging.SetMinimumLevel(LogLevel.Warning));
await app.StartAsync();
var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
var pool = app.Services.GetRequiredService<PredictionEnginePool<TextInput, TextPrediction>>();
using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = options.Clients }) { BaseAddress = new Uri(address) };

// Warm-up: JIT, engines for every concurrent caller, connections.
await Run("warm-up direct", options.Clients, 2_000, _ => { pool.Predict(new TextInput { Text = texts[0] }); return Task.CompletedTask; }, print: false);
await Run("warm-up http", options.Clients, 2_000, async i => await Post(texts[i % texts.Length]), print: false);

// Three interleaved rounds: this box is shared and noisy, so each path is measured in every round and the median
// round is reported (all rounds are printed).
var rounds = new List<(Result D1, Result DN, Result H1, Result HN)>();
for (var round = 1; round <= 3; round++)
{
    Console.WriteLine($"round {round}");
    Console.WriteLine($"  {"path",-26} {"calls",8} {"calls/s",10} {"p50 us",9} {"p99 us",9} {"max us",9}");
    var direct1 = await Run("direct pool.Predict x1", 1, options.Requests, i => { pool.Predict(new TextInput { Text = texts[i % texts.Length] }); return Task.CompletedTask; });
    var directN = await Run($"direct pool.Predict x{options.Clients}", options.Clients, options.Requests, i => { pool.Predict(new TextInput { Text = texts[i % texts.Length] }); return Task.CompletedTask; });
    var http1 = await Run("POST /predict x1", 1, options.Requests / 4, async i => await Post(texts[i % texts.Length]));
    var httpN = await Run($"POST /predict x{options.Clients}", options.Clients, options.Requests, async i => await Post(texts[i % texts.Length]));
    rounds.Add((direct1, directN, http1, httpN));
}
Result Median(Func<(Result D1, Result DN, Result H1, Result HN), Result> pick) =>
    new(rounds.Select(r => pick(r).PerSecond).Order().ElementAt(1), rounds.Select(r => pick(r).P50Us).Order().ElementAt(1),
        rounds.Select(r => pick(r).P99Us).Order().ElementAt(1));
Console.WriteLine("median of 3 rounds");
foreach (var (name, r) in new[] { ("direct pool.Predict x1", Median(r => r.D1)), ($"direct pool.Predict x{options.Clients}", Median(r => r.DN)),
             ("POST /predict x1", Median(r => r.H1)), ($"POST /predict x{options.Clients}", Median(r => r.HN)) })
    Console.WriteLine($"  {name,-26} {r.PerSecond,10:F0} calls/s  p50 {r.P50Us,7:F0} us  p99 {r.P99Us,7:F0} us");
Console.WriteLine($"HTTP/direct throughput at x{options.Clients}: {Median(r => r.HN).PerSecond / Median(r => r.DN).PerSecond:F3}; " +
                  $"p50 HTTP overhead at x1: {Median(r => r.H1).P50Us - Median(r => r.D1).P50Us:F0} us per request");
await app.StopAsync();
return 0;

async Task Post(string text)
{
    using var response = await http.PostAsJsonAsync("/predict", new PredictRequest(text));
    response.EnsureSuccessStatusCode();
    await response.Content.ReadAsByteArrayAsync();
}

async Task<Result> Run(string name, int concurrency, int total, Func<int, Task> call, bool print = true)
{
    var latencies = new long[total];
    var next = -1;
    var deadline = Stopwatch.GetTimestamp() + (long)(options.MaxSeconds * Stopwatch.Frequency);
    var clock = Stopwatch.StartNew();
    await Task.WhenAll(Enumerable.Range(0, concurrency).Select(_ => Task.Run(async () =>
    {
        int i;
        while ((i = Interlocked.Increment(ref next)) < total && Stopwatch.GetTimestamp() < deadline)
        {
            var start = Stopwatch.GetTimestamp();
            await call(i);
            latencies[i] = Stopwatch.GetTimestamp() - start;
        }
    })));
    clock.Stop();
    var done = latencies.Where(l => l > 0).Order().ToArray();
    double Us(double q) => done.Length == 0 ? 0 : done[Math.Min(done.Length - 1, (int)(q * done.Length))] * 1e6 / Stopwatch.Frequency;
    var result = new Result(done.Length / clock.Elapsed.TotalSeconds, Us(0.50), Us(0.99));
    if (print) Console.WriteLine($"  {name,-26} {done.Length,8} {result.PerSecond,10:F0} {result.P50Us,9:F0} {result.P99Us,9:F0} {Us(1.0),9:F0}");
    return result;
}

static string[] LoadTexts()
{
    var file = SharedFile("data", "SST-2", "k-shot", "16-13", "dev.tsv");
    return File.ReadLines(file).Skip(1).Select(l => l.Split('\t')[0]).ToArray();
}

static string TrainDemoModel()
{
    var path = Path.Combine(Path.GetTempPath(), "retrikt-hosting-bench-model.zip");
    DemoTextClassifier.TrainAndSave(SharedFile("data", "SST-2", "k-shot", "16-13", "train.tsv"), path);
    return path;
}

static string SharedFile(params string[] parts)
{
    var root = Environment.GetEnvironmentVariable("RETRIKT_SHARED");
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); root is null && dir is not null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, "RetriKT.MLNet.sln"))) root = Path.Combine(dir.FullName, "..", "shared");
    var path = Path.Combine([root ?? throw new InvalidOperationException("RetriKT.MLNet.sln not found; set RETRIKT_SHARED."), .. parts]);
    return File.Exists(path) ? path : throw new FileNotFoundException($"Benchmark data not found: {path}", path);
}

internal readonly record struct Result(double PerSecond, double P50Us, double P99Us);

internal sealed record Args(string? Model, int Clients, int Requests, double MaxSeconds)
{
    public static Args Parse(string[] args)
    {
        string? Get(string name) => BenchArgs.Value(args, name);
        double seconds = double.TryParse(Get("--max-seconds") ?? "30", System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture,
            out double s) && s > 0 && double.IsFinite(s) ? s
            : throw new BenchUsageException($"--max-seconds must be a number of seconds > 0, found '{Get("--max-seconds")}'.");
        return new Args(Get("--model"), BenchArgs.Int("--clients", Get("--clients") ?? "32"), BenchArgs.Int("--requests", Get("--requests") ?? "20000"), seconds);
    }
}
