using System.ClientModel;
using System.ClientModel.Primitives;
using System.Diagnostics;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.AI;
using Microsoft.ML;
using OpenAI;
using RetriKT.MLNet.BlackBox;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.TeacherServer;

namespace RetriKT.MLNet.Benchmarks.BlackBox;

/// <summary>
/// `dotnet run -c Release -- blackbox [--quick]`: side by side in one run, with the real stories260K teacher behind
/// RetriKT.TeacherServer on 127.0.0.1 (in this process, one Kestrel app and batcher per server):
/// (1) the server's throughput with 16 concurrent clients vs 16 sequential requests (dynamic batching), and
/// (2) black-box extraction samples/s with one vs two servers. Both are ratios measured back to back.
/// </summary>
public static class BlackBoxReport
{
    private static readonly TaskTemplate StoryMood = new()
    {
        Name = "StoryMood", ClassificationFormat = "{text} The story was{label}",
        Verbalizer = new Dictionary<string, string> { ["happy"] = " happy", ["sad"] = " sad" }, MaxNewTokens = 24,
    };

    public static void Run(bool quick) => RunAsync(quick).GetAwaiter().GetResult();

    private static async Task RunAsync(bool quick)
    {
        var shared = BenchPaths.SharedRoot();
        var model = Path.Combine(shared, "models", "llama2c-stories260K", "stories260K.bin");
        int threads = BenchArgs.Threads() ?? 1;
        Console.WriteLine($"cores: {Environment.ProcessorCount}, torch threads per server: {threads} (RETRIKT_BENCH_THREADS)");
        await using var one = await Serve(model, threads);
        await using var two = await Serve(model, threads);

        // (1) 16 concurrent vs 16 sequential requests on one server.
        var chat = Client(one.Urls.Single());
        var request = new ChatOptions { Temperature = 1, MaxOutputTokens = 24 };
        await chat.GetResponseAsync("Once upon a time", request); // warm-up
        int rounds = quick ? 2 : 5;
        double sequential = 0, concurrent = 0;
        for (int r = 0; r < rounds; r++)
        {
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < 16; i++) await chat.GetResponseAsync($"Tom had {i} red balls.", request);
            sequential += clock.Elapsed.TotalSeconds;
            clock.Restart();
            await Task.WhenAll(Enumerable.Range(0, 16).Select(i => chat.GetResponseAsync($"Tom had {i} red balls.", request)));
            concurrent += clock.Elapsed.TotalSeconds;
        }
        Console.WriteLine($"TeacherServer, 16 requests of 24 tokens, mean of {rounds} rounds: sequential {sequential / rounds:F2} s, 16 concurrent {concurrent / rounds:F2} s " +
                          $"-> concurrent is {sequential / concurrent:F2}x faster");

        // (2) Extraction samples/s, one vs two servers (same settings, 8 requests in flight per server).
        int perLabel = quick ? 8 : 24;
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[]
        {
            new Row("Lily was very happy. She played with her ball in the sun.", "happy"), new Row("Tom smiled. He got a big red car for his birthday.", "happy"),
            new Row("Ben was sad. His toy broke and he cried.", "sad"), new Row("The little bird was sad because it lost its home.", "sad"),
        });
        async Task<double> SamplesPerSecond(params WebApplication[] servers)
        {
            var clock = Stopwatch.StartNew();
            var result = await ml.RetriKT().BlackBoxKnowledgeExtractor(new BlackBoxExtractorOptions
            {
                Teachers = servers.Select((s, i) => new TeacherEndpoint(Client(s.Urls.Single()), $"server-{i + 1}", 8)).ToList(),
                Template = StoryMood, SamplesPerLabel = perLabel, MaxAttemptsFactor = 4, GenerationPrompt = "{examples}\n{context}",
                ClassificationPrompt = "{classification}", FidelityThreshold = 0, RequireArgmax = false, MinWords = 3, NearDuplicateThreshold = 1,
            }).FitAsync(data);
            var seconds = clock.Elapsed.TotalSeconds;
            int generated = result.Report.Extraction.Generated.Values.Sum();
            Console.WriteLine($"  {servers.Length} server(s): {generated} samples ({result.Report.Requests} requests) in {seconds:F2} s = {generated / seconds:F2} samples/s");
            return generated / seconds;
        }
        Console.WriteLine($"Black-box extraction, {perLabel} samples per label:");
        double single = await SamplesPerSecond(one), both = await SamplesPerSecond(one, two);
        Console.WriteLine($"  two servers vs one: {both / single:F2}x samples/s (both servers share this machine's {Environment.ProcessorCount} cores)");
    }

    private sealed record Row(string Text, string Label);

    private static async Task<WebApplication> Serve(string model, int threads)
    {
        var app = TeacherServerApp.Build(["--urls", "http://127.0.0.1:0", "--Logging:LogLevel:Default", "Warning"], o =>
        {
            o.ModelPath = model;
            o.Threads = threads;
        });
        await app.StartAsync();
        return app;
    }

    private static IChatClient Client(string url) => new OpenAIClient(new ApiKeyCredential("unused"), new OpenAIClientOptions
    {
        Endpoint = new Uri(url + "/v1"), RetryPolicy = new ClientRetryPolicy(0), NetworkTimeout = TimeSpan.FromMinutes(2),
    }).GetChatClient("stories260K").AsIChatClient();
}
