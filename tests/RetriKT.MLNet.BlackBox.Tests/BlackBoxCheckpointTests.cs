using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.ML;
using RetriKT.MLNet.BlackBox.Tests.Infrastructure;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.BlackBox.Tests;

/// <summary>
/// The checkpoint against a deterministic teacher: a real OpenAI-compatible Kestrel server on 127.0.0.1 whose answer is a
/// pure function of the request (as greedy decoding is), so what a resumed run does can be compared sample for sample
/// with an uninterrupted one. No TorchSharp.
/// </summary>
public class BlackBoxCheckpointTests
{
    private static IDataView StoryData(MLContext ml) => BlackBoxExtractionTests.StoryData(ml);

    /// <summary>
    /// Generation: four words derived from the prompt and the temperature (the label's letter first); classification: the
    /// label the sample's words carry. <paramref name="failGeneration"/>: the generation request (1-based, counted by this
    /// server) answered 400 instead, a failure that is not retried.
    /// </summary>
    internal static async Task<WebApplication> DeterministicTeacher(int failGeneration = 0)
    {
        int generations = 0;
        var app = LocalEndpoint.Create();
        app.MapPost("/v1/chat/completions", async (HttpContext http) =>
        {
            var request = (JsonObject)(await JsonNode.ParseAsync(http.Request.Body))!;
            var prompt = request["messages"]![0]!["content"]!.GetValue<string>();
            string content;
            if (!prompt.StartsWith("CLS ", StringComparison.Ordinal) && Interlocked.Increment(ref generations) == failGeneration)
            {
                http.Response.StatusCode = StatusCodes.Status400BadRequest;
                http.Response.ContentType = "application/json";
                await http.Response.WriteAsync("{\"error\":{\"message\":\"Refused once.\",\"type\":\"invalid_request_error\"}}");
                return;
            }
            if (prompt.StartsWith("CLS ", StringComparison.Ordinal)) content = prompt.Contains(" h", StringComparison.Ordinal) ? "happy" : "sad";
            else
            {
                var letter = prompt.StartsWith("GEN happy", StringComparison.Ordinal) ? "h" : "s";
                var hash = SHA256.HashData(Encoding.UTF8.GetBytes(prompt + "|" + request["temperature"]?.ToJsonString()));
                content = string.Join(' ', hash.Take(4).Select(b => $"{letter}{b:x2}"));
            }
            http.Response.ContentType = "application/json";
            await http.Response.WriteAsync(new JsonObject
            {
                ["id"] = "x", ["object"] = "chat.completion", ["created"] = 0, ["model"] = "fake",
                ["choices"] = new JsonArray(new JsonObject { ["index"] = 0, ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = content }, ["finish_reason"] = "stop" }),
                ["usage"] = new JsonObject { ["prompt_tokens"] = 1, ["completion_tokens"] = 1, ["total_tokens"] = 2 },
            }.ToJsonString());
        });
        await app.StartAsync();
        return app;
    }

    /// <summary>One endpoint, one request at a time: the order of the requests is the order of the draws.</summary>
    internal static BlackBoxExtractorOptions Options(string url, string? checkpoint, int perLabel = 6, CancellationToken token = default, IProgress<TrainingProgress>? progress = null) => new()
    {
        Teachers = [new TeacherEndpoint(TeacherServerProcess.OpenAiChatClient(url, model: "fake"), "fake", 1)],
        Template = BlackBoxExtractionTests.StoryMood, SamplesPerLabel = perLabel, MaxAttemptsFactor = 2,
        GenerationPrompt = "GEN {label}\n{examples}", ClassificationPrompt = "CLS {classification}",
        SoftLabels = SoftLabelSource.ClassifyAndMap, FidelityThreshold = 0, RequireArgmax = false, MinWords = 3,
        CheckpointPath = checkpoint, CancellationToken = token, Progress = progress, Seed = 5,
        RetryDelay = TimeSpan.FromMilliseconds(10), MaxRetries = 1, MaxConsecutiveFailures = 2, RequestTimeout = TimeSpan.FromSeconds(10),
    };

    private static List<string> Generated(KnowledgeStore store) => store.Entries.Where(e => e.Source == KnowledgeSource.Generated).Select(e => e.Text!).ToList();

    /// <summary>
    /// A CheckpointPath that names another file of one line without a line end (a settings JSON, say) is refused naming
    /// it; it used to be taken for a checkpoint whose header write was torn, cut to nothing and overwritten, without a word.
    /// </summary>
    [Fact]
    public async Task AOneLineFileThatIsNoCheckpointIsRefusedNotOverwritten()
    {
        await using var server = await DeterministicTeacher();
        using var folder = new TempDir("retrikt-blackbox-");
        var path = folder.File("settings.json");
        const string mine = "{\"model\":\"gpt-4o-mini\",\"notes\":\"my settings\"}";
        File.WriteAllText(path, mine);
        var ml = new MLContext(seed: 1);
        var error = Assert.Throws<InvalidDataException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(Options(server.Urls.Single(), path, perLabel: 1)).Fit(StoryData(ml)));
        Assert.Equal($"{path} line 1: not a black-box extraction checkpoint (no 'retrikt_blackbox_checkpoint' header); give this run another CheckpointPath.", error.Message);
        Assert.Equal(mine, File.ReadAllText(path));
        Assert.False(File.Exists(path + ".lock"));

        // A header torn before its line end (written by a version that did not write it whole) still starts the run afresh.
        File.WriteAllText(path, "{\"retrikt_blackbox_checkpoint\":1,\"finger");
        var run = ml.RetriKT().BlackBoxKnowledgeExtractor(Options(server.Urls.Single(), path, perLabel: 1)).Fit(StoryData(ml));
        Assert.Equal(2, run.Report.Extraction.Kept.Values.Sum());
        Assert.Equal(3, File.ReadLines(path).Count());
    }

    /// <summary>
    /// A run cancelled part way and resumed keeps what an uninterrupted run keeps. The resumed run used to start the
    /// demonstration and temperature draws from the seed again, so its first requests repeated the first run's: a
    /// deterministic teacher answered them with samples already in the checkpoint (dropped as duplicates, each spending
    /// two requests and an attempt of the label), and the store differed from an uninterrupted run's.
    /// </summary>
    [Fact]
    public async Task AResumedRunKeepsWhatAnUninterruptedRunKeeps()
    {
        await using var server = await DeterministicTeacher();
        var url = server.Urls.Single();
        using var folder = new TempDir("retrikt-blackbox-");
        var ml = new MLContext(seed: 1);
        var whole = ml.RetriKT().BlackBoxKnowledgeExtractor(Options(url, folder.File("whole.jsonl"))).Fit(StoryData(ml));
        Assert.Equal(0, whole.Report.Extraction.Dropped.Values.Sum());

        var checkpoint = folder.File("resumed.jsonl");
        var resumed = CancelAfterFourSamplesThenResume(ml, url, checkpoint);
        Assert.Equal(4, resumed.Report.Extraction.ResumedBatches);
        Assert.Equal(0, resumed.Report.Extraction.Dropped.Values.Sum());
        Assert.Equal(whole.Report.Requests - 2 * 4, resumed.Report.Requests);
        Assert.Equal(Generated(whole.Store), Generated(resumed.Store));
    }

    /// <summary>
    /// A soft label in the checkpoint that is no probability distribution (edited by hand, written by a broken endpoint's
    /// answer) was replayed as it stood: the resumed run failed at its end in the store's constructor, naming an index of
    /// the store ("Entry 4: soft label sums to 1.4"). It now fails as the checkpoint is read, naming the file and the line.
    /// </summary>
    [Fact]
    public async Task ASoftLabelThatIsNoDistributionIsNamedByFileAndLine()
    {
        await using var server = await DeterministicTeacher();
        var url = server.Urls.Single();
        using var folder = new TempDir("retrikt-blackbox-");
        var ml = new MLContext(seed: 1);
        var path = folder.File("run.jsonl");
        ml.RetriKT().BlackBoxKnowledgeExtractor(Options(url, path, perLabel: 2)).Fit(StoryData(ml));
        var lines = File.ReadAllLines(path);
        int kept = Array.FindIndex(lines, l => l.Contains("\"soft_label\":[", StringComparison.Ordinal) && !l.Contains("\"dropped\":\"", StringComparison.Ordinal));
        var record = JsonNode.Parse(lines[kept])!.AsObject();
        record["soft_label"] = new JsonArray(0.7f, 0.7f);
        lines[kept] = record.ToJsonString();
        File.WriteAllLines(path, lines);

        var e = Assert.Throws<InvalidDataException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(Options(url, path, perLabel: 2)).Fit(StoryData(ml)));
        Assert.Equal($"{path} line {kept + 1}: not a checkpoint record (soft label sums to 1.4, expected 1.).", e.Message);
    }

    /// <summary>A run on <paramref name="checkpoint"/> cancelled after four judged samples, then the run that resumes it.</summary>
    private static BlackBoxExtraction CancelAfterFourSamplesThenResume(MLContext ml, string url, string checkpoint)
    {
        using (var cts = new CancellationTokenSource())
        {
            var progress = new SyncProgress(p => { if (p.Step >= 4) cts.Cancel(); });
            Assert.ThrowsAny<OperationCanceledException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(Options(url, checkpoint, token: cts.Token, progress: progress)).Fit(StoryData(ml)));
        }
        return ml.RetriKT().BlackBoxKnowledgeExtractor(Options(url, checkpoint)).Fit(StoryData(ml));
    }

    /// <summary>
    /// The same with a request that failed (after its retries) before the cancel: its draw of demonstrations and temperature
    /// was made but no line recorded it, so the resumed run replayed one draw too few and asked again with a draw an
    /// earlier sample had already been made from; its store differed from an uninterrupted run's. The failure has its
    /// line now, and the resumed run goes on where the draws left off.
    /// </summary>
    [Fact]
    public async Task AResumedRunKeepsWhatAnUninterruptedRunKeeps_AfterARequestFailed()
    {
        using var folder = new TempDir("retrikt-blackbox-");
        var ml = new MLContext(seed: 1);
        BlackBoxExtraction whole;
        await using (var server = await DeterministicTeacher(failGeneration: 2))
            whole = ml.RetriKT().BlackBoxKnowledgeExtractor(Options(server.Urls.Single(), folder.File("whole.jsonl"))).Fit(StoryData(ml));
        Assert.Equal(0, whole.Report.Extraction.Dropped.Values.Sum());

        await using var interrupted = await DeterministicTeacher(failGeneration: 2);
        var url = interrupted.Urls.Single();
        var checkpoint = folder.File("resumed.jsonl");
        var resumed = CancelAfterFourSamplesThenResume(ml, url, checkpoint);
        Assert.Equal(4, resumed.Report.Extraction.ResumedBatches);
        Assert.Equal(0, resumed.Report.Extraction.Dropped.Values.Sum());
        Assert.Equal(Generated(whole.Store), Generated(resumed.Store));
    }

    /// <summary>
    /// A checkpoint of a run with other settings is refused naming the file and each group of settings that differs,
    /// with both values; it used to give two SHA-256 hashes, leaving the user to guess which of some thirty settings changed.
    /// </summary>
    [Fact]
    public async Task ACheckpointOfOtherSettingsIsRefusedNamingWhatDiffers()
    {
        await using var server = await DeterministicTeacher();
        var url = server.Urls.Single();
        using var folder = new TempDir("retrikt-blackbox-");
        var checkpoint = folder.File("run.jsonl");
        var ml = new MLContext(seed: 1);
        ml.RetriKT().BlackBoxKnowledgeExtractor(Options(url, checkpoint, perLabel: 2)).Fit(StoryData(ml));
        var written = File.ReadAllText(checkpoint);

        var hotter = Options(url, checkpoint, perLabel: 2);
        hotter.Temperature = 0.7f;
        var error = Assert.Throws<InvalidOperationException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(hotter).Fit(StoryData(ml)));
        Assert.Equal($"{checkpoint} line 1: the checkpoint was written by a run with other settings (sampling: checkpoint [1,0.2,null,null,\"\\n\",null], " +
            "this run [0.7,0.2,null,null,\"\\n\",null]); use the same settings to resume, or another CheckpointPath.", error.Message);

        // Another teacher (the model lives in the client) and other few-shot data: each named.
        var other = Options(url, checkpoint, perLabel: 2);
        other.Teachers = [new TeacherEndpoint(TeacherServerProcess.OpenAiChatClient(url, model: "another-model"), "fake", 1)];
        var fewer = ml.Data.TakeRows(StoryData(ml), 7);
        var message = Assert.Throws<InvalidOperationException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(other).Fit(fewer)).Message;
        Assert.StartsWith($"{checkpoint} line 1: the checkpoint was written by a run with other settings (few_shot: checkpoint \"sha256:", message);
        Assert.Contains("; client_models: checkpoint [\"fake\"], this run [\"another-model\"])", message);
        Assert.Equal(written, File.ReadAllText(checkpoint));
    }

    /// <summary>
    /// SoftLabels = LogProbs against an endpoint that returns none (Ollama, a server started without them): every sample is
    /// dropped unlabelled. The run says so, naming the setting; it used to warn only "kept 0 of 3 ... (raise
    /// MaxAttemptsFactor or relax the filters)", which sends the user to settings that cannot help.
    /// </summary>
    [Fact]
    public async Task AnEndpointWithoutLogProbsWhenTheyAreRequiredIsNamedNotBlamedOnTheFilters()
    {
        await using var server = await DeterministicTeacher();
        var ml = new MLContext(seed: 1);
        var warnings = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (warnings) warnings.Add(e.Message); };
        var options = Options(server.Urls.Single(), null, perLabel: 3);
        options.SoftLabels = SoftLabelSource.LogProbs;
        var report = ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(StoryData(ml)).Report;
        Assert.Equal(12, report.Unlabelled);
        Assert.Single(warnings, w => w.EndsWith("12 of 12 judged samples got no soft label and were dropped as LowFidelity: SoftLabels is LogProbs and the endpoints returned " +
            "no log-probabilities that begin a label word (an endpoint without them, such as Ollama, needs SoftLabels Auto or ClassifyAndMap).", StringComparison.Ordinal));
        Assert.Contains(warnings, w => w.EndsWith("Label 'happy': kept 0 of 3 wanted samples after 6 generated (most samples got no soft label from the teacher, see above).", StringComparison.Ordinal));
        Assert.DoesNotContain(warnings, w => w.Contains("relax the filters", StringComparison.Ordinal));
    }

    /// <summary>
    /// Every endpoint refusing the run (a wrong API key) fails it in one line that says why; it used to say only "taken out
    /// after failing 2 requests in a row", the cause being in a warning on MLContext.Log, which a caller may not read.
    /// </summary>
    [Fact]
    public async Task EveryEndpointTakenOutFailsTheRunNamingEachOnesLastError()
    {
        await using var server = LocalEndpoint.Create();
        server.MapPost("/v1/chat/completions", async (HttpContext http) =>
        {
            http.Response.StatusCode = StatusCodes.Status401Unauthorized;
            http.Response.ContentType = "application/json";
            await http.Response.WriteAsync("{\"error\":{\"message\":\"Incorrect API key provided.\",\"type\":\"invalid_request_error\",\"code\":\"invalid_api_key\"}}");
        });
        await server.StartAsync();
        var ml = new MLContext(seed: 1);
        var error = Assert.Throws<InvalidOperationException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(Options(server.Urls.Single(), null, perLabel: 1)).Fit(StoryData(ml)));
        Assert.DoesNotContain('\n', error.Message);
        Assert.StartsWith("All 1 teacher endpoints were taken out after failing 2 requests in a row (fake, last: generation request for label 'happy': ClientResultException: HTTP 401", error.Message);
        Assert.Contains("Incorrect API key provided.", error.Message);
    }

    /// <summary>
    /// A run whose requests fail reports progress at each failure, with the failures counted: progress came only with a
    /// judged sample, so a run failing (or retrying) request after request showed nothing until it ended.
    /// </summary>
    [Fact]
    public async Task FailedRequestsAreReportedAsProgress()
    {
        await using var server = LocalEndpoint.Create();
        server.MapPost("/v1/chat/completions", (HttpContext http) => { http.Response.StatusCode = StatusCodes.Status400BadRequest; return Task.CompletedTask; });
        await server.StartAsync();
        var ml = new MLContext(seed: 1);
        var reports = new List<TrainingProgress>();
        var options = Options(server.Urls.Single(), null, perLabel: 1, progress: new SyncProgress(reports.Add));
        Assert.Throws<InvalidOperationException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(StoryData(ml)));
        Assert.Equal([1.0, 2.0], reports.Select(r => r.Metrics["failed"]));
        Assert.All(reports, r => Assert.Equal(("BlackBoxExtraction", 0L, 2L), (r.Stage, r.Step, r.TotalSteps)));
    }
}
