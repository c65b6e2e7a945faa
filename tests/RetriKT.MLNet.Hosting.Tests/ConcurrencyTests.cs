using System.Collections.Concurrent;
using System.Diagnostics;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Hosting.Tests;

public class ConcurrencyTests
{
    [SharedDataFact]
    public async Task ThirtyTwoConcurrentClients_GetTheSequentialAnswers_WithZeroErrors()
    {
        using var dir = new TempDir();
        var (v1, _) = TestModels.Save(dir.Path, "concurrency");
        var expected = TestModels.SequentialAnswers(v1);
        var modelPath = dir.File("model.zip");
        File.Copy(v1, modelPath);
        await using var server = await WebApiServer.StartAsync(modelPath);

        const int clients = 32, requestsPerClient = 100;   // 3,200 requests in total
        var sentences = TestModels.Sentences;
        var wrong = new ConcurrentQueue<string>();
        var clock = Stopwatch.StartNew();
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            for (var i = 0; i < requestsPerClient; i++)
            {
                var text = sentences[(c * 7 + i) % sentences.Count];
                var answer = await server.Client.PredictAsync(text, deadline.Token);
                if (!answer.Is(expected[text])) wrong.Enqueue($"'{text}': {answer.Status} {answer.Body}");
            }
        })));

        Assert.True(wrong.IsEmpty, $"{wrong.Count} of {clients * requestsPerClient} answers differ from sequential prediction, e.g. {wrong.FirstOrDefault()}");
        // Engines are pooled, not created per request: far fewer engines than requests.
        Assert.Equal(1, server.Pool.GetModelGeneration());
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60));
    }
}
