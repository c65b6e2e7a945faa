using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using OpenAI.Chat;
using RetriKT.MLNet.BlackBox.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.BlackBox.Tests;

/// <summary>RetriKT.TeacherServer as a separate process on 127.0.0.1, spoken to by the official OpenAI client unchanged and over plain HTTP.</summary>
[Collection(TeacherServerCollection.Name)]
public class TeacherServerTests(SharedTeacherServer shared)
{
    private const string Prompt = "Lily went to the park with her mom.";

    /// <summary>Start-up failures as a user meets them: one line on stderr and an exit code, never a stack trace.</summary>
    [Fact]
    public void ASettingOrTeacherItCannotStartWithIsOneLineAndAnExitCode()
    {
        using var folder = new TempDir("retrikt-teacherserver-");
        var damaged = folder.File("model.bin");
        File.WriteAllBytes(damaged, new byte[10]);
        foreach (var (arguments, code, expected) in new (string[], int, string)[]
        {
            ([], 2, "error: TeacherServer needs --ModelPath <Hugging Face directory | llama2.c .bin>."),
            (["--ModelPath", folder.File("missing.bin")], 1, $"error: Teacher checkpoint not found: {folder.File("missing.bin")}"),
            (["--ModelPath", damaged], 1, damaged),
        })
        {
            var (exit, output, error) = TeacherServerProcess.RunToExit(arguments);
            Assert.True(exit == code, $"[{string.Join(' ', arguments)}]: exit code {exit}, expected {code}; stderr: {error}");
            var line = Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.Contains(expected, line);
            Assert.DoesNotContain("listening", output);
        }
    }

    [SharedDataFact]
    public void AnAddressInUseIsOneLineAndExitCodeOne()
    {
        using var taken = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        int port = ((IPEndPoint)taken.LocalEndpoint).Port;
        var (exit, output, error) = TeacherServerProcess.RunToExit("--ModelPath", TeacherServerProcess.Stories260K, "--urls", $"http://127.0.0.1:{port}");
        Assert.True(exit == 1, $"exit code {exit}; stdout: {output}; stderr: {error}");
        Assert.Equal($"error: Failed to bind to address http://127.0.0.1:{port}: address already in use.", error.Trim());
        Assert.Equal("", output); // the host's own failure log, with its stack traces, is not printed
    }

    [SharedDataFact]
    public async Task OpenAiClientGetsChatLogProbsStreamingAndCompletionsFromTeacherServer()
    {
        var server = shared.Server;
        var chat = server.ChatClient();

        // Chat completion with logprobs / top_logprobs through Microsoft.Extensions.AI.OpenAI.
        var options = new ChatOptions
        {
            Temperature = 0, MaxOutputTokens = 12,
            RawRepresentationFactory = _ => new ChatCompletionOptions { IncludeLogProbabilities = true, TopLogProbabilityCount = 5 },
        };
        var response = await chat.GetResponseAsync(Prompt, options);
        Assert.False(string.IsNullOrWhiteSpace(response.Text));
        // Microsoft.Extensions.AI.OpenAI 10.11 keeps them on the raw OpenAI ChatCompletion.
        var tokens = Assert.IsType<ChatCompletion>(response.RawRepresentation).ContentTokenLogProbabilities;
        Assert.Equal(response.Usage!.OutputTokenCount, tokens.Count);
        Assert.Equal(response.Text, string.Concat(tokens.Select(t => t.Token)));
        Assert.All(tokens, t =>
        {
            Assert.Equal(5, t.TopLogProbabilities.Count);
            Assert.True(t.LogProbability <= 0, $"log-probability {t.LogProbability}");
            Assert.Equal(t.TopLogProbabilities.Select(a => a.LogProbability).OrderByDescending(x => x), t.TopLogProbabilities.Select(a => a.LogProbability));
            Assert.Equal(t.TopLogProbabilities[0].LogProbability, t.LogProbability, 3); // greedy: the chosen token is the most probable
        });

        // Streaming (SSE) gives the same greedy text in several updates.
        var streamed = new StringBuilder();
        int updates = 0;
        await foreach (var update in chat.GetStreamingResponseAsync(Prompt, new ChatOptions { Temperature = 0, MaxOutputTokens = 12 }))
        {
            streamed.Append(update.Text);
            updates++;
        }
        Assert.Equal(response.Text, streamed.ToString());
        Assert.True(updates > 3, $"{updates} streamed updates");

        // /v1/completions over plain HTTP: n, logprobs, stop, usage; streaming; a bad request.
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        var many = await Post(http, new { prompt = Prompt, max_tokens = 8, n = 3, temperature = 1.0, logprobs = 2, seed = 7 });
        var choices = many["choices"]!.AsArray();
        Assert.Equal(3, choices.Count);
        Assert.All(choices, c =>
        {
            var lp = c!["logprobs"]!;
            Assert.Equal(c["text"]!.GetValue<string>(), string.Concat(lp["tokens"]!.AsArray().Select(t => t!.GetValue<string>())));
            Assert.All(lp["top_logprobs"]!.AsArray(), top => Assert.InRange(top!.AsObject().Count, 1, 2));
        });
        Assert.Equal(choices.Sum(c => c!["logprobs"]!["tokens"]!.AsArray().Count), many["usage"]!["completion_tokens"]!.GetValue<int>());

        var greedy = await Post(http, new { prompt = Prompt, max_tokens = 40, temperature = 0 });
        var greedyText = greedy["choices"]![0]!["text"]!.GetValue<string>();
        int dot = greedyText.IndexOf('.');
        Assert.True(dot > 0, $"greedy text without a '.': {greedyText}");
        var stopped = (await Post(http, new { prompt = Prompt, max_tokens = 40, temperature = 0, stop = "." }))["choices"]![0]!;
        Assert.Equal(greedyText[..dot], stopped["text"]!.GetValue<string>());
        Assert.Equal("stop", stopped["finish_reason"]!.GetValue<string>());

        using var sse = await http.PostAsJsonAsync("/v1/completions", new { prompt = Prompt, max_tokens = 40, temperature = 0, stream = true });
        Assert.Equal("text/event-stream", sse.Content.Headers.ContentType!.MediaType);
        var events = (await sse.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        Assert.Equal(greedyText, string.Concat(events[..^1].Select(e => JsonNode.Parse(e["data: ".Length..])!["choices"]![0]!["text"]!.GetValue<string>())));

        using var bad = await http.PostAsJsonAsync("/v1/completions", new { prompt = Prompt, temperature = 5 });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Equal("temperature", JsonNode.Parse(await bad.Content.ReadAsStringAsync())!["error"]!["param"]!.GetValue<string>());
    }

    [SharedDataFact]
    public async Task ConcurrentRequestsAreBatchedIntoFewGenerationCalls()
    {
        var server = shared.Server;
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        var before = await http.GetFromJsonAsync<JsonObject>("/health");
        var chat = server.ChatClient();
        var answers = await Task.WhenAll(Enumerable.Range(0, 16).Select(i =>
            chat.GetResponseAsync($"Tom had {i} red balls.", new ChatOptions { Temperature = 0.8f, MaxOutputTokens = 16 })));
        var after = await http.GetFromJsonAsync<JsonObject>("/health");
        Assert.All(answers, a => Assert.True(a.Usage!.OutputTokenCount > 0));
        long calls = after!["calls"]!.GetValue<long>() - before!["calls"]!.GetValue<long>();
        long rows = after["rows"]!.GetValue<long>() - before["rows"]!.GetValue<long>();
        Assert.Equal(16, rows);
        Assert.True(calls < 16, $"16 concurrent requests took {calls} generation calls: no batching");
    }

    [SharedDataFact]
    public async Task ASeededRequestGetsItsOwnAnswerBesideOthers_AndNoRequestShortensAnother()
    {
        using var http = new HttpClient { BaseAddress = new Uri(shared.Server.Url) };
        // Sampled with a seed: alone or beside two copies of itself in one batching window, the same text.
        var seeded = new { prompt = Prompt, max_tokens = 24, temperature = 1.0, seed = 7 };
        string Text(JsonObject r) => r["choices"]![0]!["text"]!.GetValue<string>();
        string alone = Text(await Post(http, seeded));
        var together = await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => Post(http, seeded)));
        Assert.All(together, r => Assert.Equal(alone, Text(r)));

        // A prompt that leaves no room for its max_tokens is refused (it used to shorten every row of its batch).
        var longPrompt = string.Concat(Enumerable.Repeat("Tom had a big red ball and he liked to play with it. ", 26));
        var (status, error) = await PostRaw(http, "/v1/completions", new JsonObject { ["prompt"] = longPrompt, ["max_tokens"] = 60 }.ToJsonString());
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Matches(@"^The prompt has \d+ tokens and max_tokens is 60; together they must fit the model's context of 512 tokens\.$", error);
    }

    [SharedDataFact]
    public async Task AnotherModelsNameADuplicateKeyAndAFractionalCountAreClientErrors_AndLogProbsCoverTheReturnedText()
    {
        using var http = new HttpClient { BaseAddress = new Uri(shared.Server.Url) };
        var (status, error) = await PostRaw(http, "/v1/chat/completions", """{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}""");
        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.Equal("The model 'gpt-4o' does not exist here; this server serves 'stories260K'.", error);
        (status, error) = await PostRaw(http, "/v1/chat/completions", """{"messages":[{"role":"user","content":"Hi"}],"n":1,"n":2}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("Key: n", error);
        (status, error) = await PostRaw(http, "/v1/completions", """{"prompt":"Hi","n":1.7}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("'n' must be a whole number, found 1.7.", error);

        // Cut at a stop sequence, the text and its tokens' texts agree (the stop's tokens are not reported).
        using var response = await http.PostAsJsonAsync("/v1/chat/completions", new
        {
            model = "stories260K", messages = new[] { new { role = "user", content = "Once upon a time" } },
            max_tokens = 40, temperature = 0, logprobs = true, top_logprobs = 2, stop = new[] { "girl" },
        });
        var choice = JsonNode.Parse(await response.Content.ReadAsStringAsync())!["choices"]![0]!;
        var content = choice["message"]!["content"]!.GetValue<string>();
        var tokens = string.Concat(choice["logprobs"]!["content"]!.AsArray().Select(t => t!["token"]!.GetValue<string>()));
        Assert.EndsWith("little ", content); // greedy stories260K: ", there was a little girl ..." cut at "girl"
        Assert.Equal(content, tokens);
    }

    private static async Task<(HttpStatusCode Status, string Error)> PostRaw(HttpClient http, string path, string json)
    {
        using var response = await http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
        var body = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        return (response.StatusCode, body["error"]!["message"]!.GetValue<string>());
    }

    private static async Task<JsonObject> Post(HttpClient http, object body)
    {
        using var response = await http.PostAsJsonAsync("/v1/completions", body);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, text);
        return JsonNode.Parse(text)!.AsObject();
    }
}

/// <summary>The server tests start processes and load the CPU: they run one at a time.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TeacherServerCollection : ICollectionFixture<SharedTeacherServer>
{
    public const string Name = "TeacherServer processes";
}
