using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.AI;
using Microsoft.ML;
using RetriKT.MLNet.BlackBox.Tests.Infrastructure;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.BlackBox.Tests;

/// <summary>Black-box extraction from real TeacherServer processes (stories260K) over 127.0.0.1, with real failures.</summary>
[Collection(TeacherServerCollection.Name)]
public class BlackBoxExtractionTests(SharedTeacherServer shared)
{
    internal static readonly TaskTemplate StoryMood = new()
    {
        Name = "StoryMood",
        ClassificationFormat = "{text} The story was{label}",
        Verbalizer = new Dictionary<string, string> { ["happy"] = " happy", ["sad"] = " sad" },
        MaxNewTokens = 24,
    };

    internal sealed class StoryRow
    {
        public string Text { get; set; } = "";
        public string Label { get; set; } = "";
    }

    /// <summary>Eight labelled few-shot stories (four happy, four sad), shared with the checkpoint tests.</summary>
    internal static IDataView StoryData(MLContext ml) => ml.Data.LoadFromEnumerable(new[]
    {
        new StoryRow { Text = "Lily was very happy. She played with her ball in the sun.", Label = "happy" },
        new StoryRow { Text = "Tom smiled. He got a big red car for his birthday.", Label = "happy" },
        new StoryRow { Text = "The dog was happy and ran in the park with Sue.", Label = "happy" },
        new StoryRow { Text = "Mia laughed and hugged her mom. They ate cake.", Label = "happy" },
        new StoryRow { Text = "Ben was sad. His toy broke and he cried.", Label = "sad" },
        new StoryRow { Text = "The little bird was sad because it lost its home.", Label = "sad" },
        new StoryRow { Text = "Anna cried. Her friend did not want to play.", Label = "sad" },
        new StoryRow { Text = "Max felt sad when the rain ruined his kite.", Label = "sad" },
    });

    /// <summary>Base-model prompts (stories260K is no chat model), permissive fidelity (it is no classifier either), fast retries.</summary>
    private static BlackBoxExtractorOptions Options(IReadOnlyList<TeacherEndpoint> teachers, string? checkpoint = null, IProgress<TrainingProgress>? progress = null,
        CancellationToken token = default, int perLabel = 6) => new()
    {
        Teachers = teachers, Template = StoryMood, SamplesPerLabel = perLabel, MaxAttemptsFactor = 8,
        GenerationPrompt = "{examples}\n{context}", ClassificationPrompt = "{classification}",
        FidelityThreshold = 0, RequireArgmax = false, MinWords = 3,
        CheckpointPath = checkpoint, Progress = progress, CancellationToken = token, Seed = 5,
        RetryDelay = TimeSpan.FromMilliseconds(50), MaxRetries = 2, MaxConsecutiveFailures = 2, RequestTimeout = TimeSpan.FromSeconds(30),
    };

    private static List<string> KeptInCheckpoint(string path) => File.ReadLines(path).Skip(1)
        .Select(l => JsonNode.Parse(l)!).Where(n => n["dropped"] is null && n["failed"] is null).Select(n => n["text"]!.GetValue<string>()).ToList();

    private static List<string> Generated(KnowledgeStore store) => store.Entries.Where(e => e.Source == KnowledgeSource.Generated).Select(e => e.Text!).ToList();

    [SharedDataFact]
    public void TwoServersOneKilledMidRunFinishesOnTheOtherWithNothingLost()
    {
        using var a = TeacherServerProcess.Start();
        var b = shared.Server;
        var ml = new MLContext(seed: 1);
        var data = StoryData(ml);
        using var folder = new TempDir("retrikt-blackbox-");
        var checkpoint = folder.File("run.jsonl");
        // Warm the fresh server's request path, then kill it once it has served samples of this run.
        Assert.NotEmpty(a.ChatClient().GetResponseAsync("Once upon a time", new ChatOptions { MaxOutputTokens = 4 }).GetAwaiter().GetResult().Text);
        long keptAtKill = -1;
        var progress = new SyncProgress(p => { if (keptAtKill < 0 && p.Metrics["requests:a"] >= 2) { keptAtKill = p.Step; a.Kill(); } });
        // Whether 'a' fails twice before 'b' alone fills the quota is a race that a fast decoder loses, so 'b' answers
        // nothing until 'a' has been taken out (seen in the run's log); then the outcome does not depend on speed.
        var aTakenOut = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        ml.Log += (_, e) => { if (e.Message.Contains("endpoint 'a' taken out")) aTakenOut.TrySetResult(); };
        var teachers = new[] { new TeacherEndpoint(a.ChatClient(), "a", 3), new TeacherEndpoint(new HeldUntil(b.ChatClient(), aTakenOut.Task), "b", 3) };

        var result = ml.RetriKT().BlackBoxKnowledgeExtractor(Options(teachers, checkpoint, progress)).Fit(data);
        var report = result.Report;
        Assert.True(a.HasExited);
        Assert.InRange(keptAtKill, 0, 11); // killed mid-run
        Assert.Equal(["a"], report.EndpointsTakenOut);
        Assert.True(report.RequestsPerEndpoint["a"] > 0 && report.RequestsPerEndpoint["b"] > 0, report.ToString());
        Assert.Equal(6, report.Extraction.Kept["happy"]);
        Assert.Equal(6, report.Extraction.Kept["sad"]);
        Assert.Equal("logprobs", report.SoftLabelSource);

        // Same store as the white-box path: few-shot gold rows, then balanced generated rows with soft labels that sum to 1.
        var store = result.Store;
        Assert.Equal(8 + 12, store.Count);
        Assert.All(store.Entries.Where(e => e.Source == KnowledgeSource.Generated), e =>
        {
            Assert.Equal(1f, e.SoftLabel.Sum(), 3);
            Assert.Equal(e.SoftLabel[e.Label], e.Fidelity);
        });
        Assert.Equal(["Text", "Text2", "Label", "SoftLabel", "Fidelity", "Source"], result.ToDataView(ml).Schema.Select(c => c.Name));

        // Nothing lost: every sample kept before and after the kill is in the checkpoint and the store, once.
        var kept = KeptInCheckpoint(checkpoint);
        Assert.Equal(kept.OrderBy(t => t), Generated(store).OrderBy(t => t));
    }

    /// <summary>A real endpoint whose requests wait for <paramref name="release"/> (at most a minute, so a broken run fails its assertions rather than hangs).</summary>
    private sealed class HeldUntil(IChatClient inner, Task release) : DelegatingChatClient(inner)
    {
        public override async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
        {
            await Task.WhenAny(release, Task.Delay(TimeSpan.FromMinutes(1), cancellationToken)).ConfigureAwait(false);
            return await base.GetResponseAsync(messages, options, cancellationToken).ConfigureAwait(false);
        }
    }

    [SharedDataFact]
    public void RestartAfterAKillResumesOtherSettingsRefuseAndTheStudentTrains()
    {
        var server = shared.Server;
        var ml = new MLContext(seed: 1);
        var data = StoryData(ml);
        var teachers = new[] { new TeacherEndpoint(server.ChatClient(), "only", 4) };
        using var folder = new TempDir("retrikt-blackbox-");
        var checkpoint = folder.File("run.jsonl");

        using (var cts = new CancellationTokenSource())
        {
            var progress = new SyncProgress(p => { if (p.Step >= 4) Task.Run(cts.Cancel); });
            Assert.ThrowsAny<OperationCanceledException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(Options(teachers, checkpoint, progress, cts.Token)).Fit(data));
        }
        var before = KeptInCheckpoint(checkpoint);
        Assert.InRange(before.Count, 4, 11);
        File.AppendAllText(checkpoint, "{\"label\":0,\"text\":\"a write torn by the cra"); // killed during a write

        var resumed = ml.RetriKT().BlackBoxKnowledgeExtractor(Options(teachers, checkpoint)).Fit(data);
        Assert.True(resumed.Report.Extraction.ResumedBatches >= before.Count, resumed.Report.ToString());
        Assert.Equal(6, resumed.Report.Extraction.Kept["happy"]);
        Assert.Equal(6, resumed.Report.Extraction.Kept["sad"]);
        Assert.Subset(Generated(resumed.Store).ToHashSet(), before.ToHashSet());
        Assert.Equal(KeptInCheckpoint(checkpoint).OrderBy(t => t), Generated(resumed.Store).OrderBy(t => t));

        var refused = Assert.Throws<InvalidOperationException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(Options(teachers, checkpoint, perLabel: 7)).Fit(data));
        Assert.Contains("other settings", refused.Message);
        // Another model (it lives in the client, not in ModelId): refused too, rather than two teachers' samples in one store.
        var otherModel = new[] { new TeacherEndpoint(TeacherServerProcess.OpenAiChatClient(server.Url, model: "another-model"), "other", 4) };
        Assert.Contains("other settings", Assert.Throws<InvalidOperationException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(Options(otherModel, checkpoint)).Fit(data)).Message);

        // A damaged record: the file, the line and what is wrong, in one line.
        var damaged = folder.File("damaged.jsonl");
        File.WriteAllLines(damaged, [.. File.ReadLines(checkpoint), "{\"label\":0,\"text\":\"x\",\"dropped\":\"Bogus\"}"]);
        int line = File.ReadLines(damaged).Count();
        var bad = Assert.Throws<InvalidDataException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(Options(teachers, damaged)).Fit(data));
        Assert.StartsWith($"{damaged} line {line}: not a checkpoint record ('dropped' is 'Bogus', not one of [Empty, ", bad.Message);
        File.WriteAllLines(damaged, [.. File.ReadLines(checkpoint).Take(line - 1), "{\"text\":\"x\",\"dropped\":\"Empty\"}"]);
        Assert.Equal($"{damaged} line {line}: not a checkpoint record (field 'label' is missing).",
            Assert.Throws<InvalidDataException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(Options(teachers, damaged)).Fit(data)).Message);

        // The student trains from the black-box store as from a white-box one.
        var keys = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            StoreData = resumed.ToDataView(ml), HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 2, BatchSize = 8, TeacherParameterCount = 260_000,
            StoreValidationShare = 0, // every generated entry stays in the store (by default a tenth is held out to tune on)
        }).Fit(keys.Transform(data));
        Assert.Equal(12, student.Store.Entries.Count(e => e.Source == KnowledgeSource.Generated));
        Assert.True(student.Store.HasEmbeddings);
        var scored = ml.Data.CreateEnumerable<ScoredRow>(student.Transform(keys.Transform(data)), reuseRowObject: false).ToList();
        Assert.Equal(8, scored.Count);
        Assert.All(scored, r => Assert.Equal(1f, r.Score.Sum(), 3));
    }

    /// <summary>
    /// A second run on a checkpoint another run is writing is refused in one line before it reads the file (it used to take
    /// the first run's line in flight for a torn one and cut it, then append its samples beside the first run's); once
    /// the first run ends, the same path resumes. A record with a byte that is not UTF-8 is named by file and line
    /// (it used to read as U+FFFD into the sample's text, and train the student on it).
    /// </summary>
    [SharedDataFact]
    public async Task ACheckpointAnotherRunIsWritingIsRefused_AndABrokenByteIsNamedByItsLine()
    {
        var server = shared.Server;
        using var folder = new TempDir("retrikt-blackbox-");
        var checkpoint = folder.File("run.jsonl");
        var release = new TaskCompletionSource();
        var held = new[] { new TeacherEndpoint(new HeldUntil(server.ChatClient(), release.Task), "only", 2) };
        var first = Task.Run(() => { var ml = new MLContext(seed: 1); return ml.RetriKT().BlackBoxKnowledgeExtractor(Options(held, checkpoint, perLabel: 2)).Fit(StoryData(ml)); });
        for (var deadline = DateTime.UtcNow.AddSeconds(30); !File.Exists(checkpoint) && !first.IsCompleted && DateTime.UtcNow < deadline;) await Task.Delay(20);
        Assert.True(File.Exists(checkpoint), "the first run wrote no checkpoint");

        var ml = new MLContext(seed: 1);
        var data = StoryData(ml);
        var refused = Assert.Throws<InvalidOperationException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(Options(held, checkpoint, perLabel: 2)).Fit(data));
        Assert.Equal($"{checkpoint}: another extraction run is using this checkpoint (it holds {checkpoint}.lock); wait for it to end, or give this run another CheckpointPath.", refused.Message);
        release.SetResult();
        var done = await first;
        Assert.Equal(2, done.Report.Extraction.Kept["happy"]);
        Assert.Equal(2, done.Report.Extraction.Kept["sad"]);
        Assert.False(File.Exists(checkpoint + ".lock"), "the lock outlived its run");
        var resumed = ml.RetriKT().BlackBoxKnowledgeExtractor(Options(held, checkpoint, perLabel: 2)).Fit(data);
        Assert.Equal(0, resumed.Report.Requests); // everything came from the checkpoint
        Assert.Equal(KeptInCheckpoint(checkpoint).OrderBy(t => t), Generated(resumed.Store).OrderBy(t => t));

        // Line 2 with one byte damaged inside its text.
        var lines = File.ReadAllLines(checkpoint);
        var damaged = folder.File("damaged.jsonl");
        var record = System.Text.Encoding.UTF8.GetBytes(lines[1]);
        int at = lines[1].IndexOf("\"text\":\"", StringComparison.Ordinal) + 8;
        record[at] = 0xFF;
        File.WriteAllBytes(damaged, [.. System.Text.Encoding.UTF8.GetBytes(lines[0] + "\n"), .. record, (byte)'\n']);
        Assert.Equal($"{damaged} line 2: not a checkpoint record (expected UTF-8 text, found byte 0xFF).",
            Assert.Throws<InvalidDataException>(() => ml.RetriKT().BlackBoxKnowledgeExtractor(Options(held, damaged, perLabel: 2)).Fit(data)).Message);
    }

    private sealed class ScoredRow
    {
        public float[] Score { get; set; } = [];
    }

    [SharedDataFact]
    public async Task ServerAnswering429WithRetryAfterIsWaitedForAndTheRunCompletes()
    {
        var teacher = shared.Server;
        // A real Kestrel front: 429 + Retry-After: 1 for 1.5 s from the first request, then it forwards to the teacher.
        DateTime? busyUntil = null;
        int throttled = 0;
        await using var app = LocalEndpoint.Create();
        using var forward = new HttpClient { BaseAddress = new Uri(teacher.Url) };
        app.MapPost("/v1/{**path}", async (HttpContext http, string path) =>
        {
            lock (forward) busyUntil ??= DateTime.UtcNow.AddSeconds(1.5);
            if (DateTime.UtcNow < busyUntil)
            {
                Interlocked.Increment(ref throttled);
                http.Response.StatusCode = StatusCodes.Status429TooManyRequests;
                http.Response.Headers.RetryAfter = "1";
                await http.Response.WriteAsync("{\"error\":{\"message\":\"busy\",\"type\":\"rate_limit_exceeded\"}}");
                return;
            }
            using var body = new StreamContent(http.Request.Body);
            body.Headers.ContentType = new("application/json");
            using var answer = await forward.PostAsync("/v1/" + path, body);
            http.Response.StatusCode = (int)answer.StatusCode;
            http.Response.ContentType = "application/json";
            await answer.Content.CopyToAsync(http.Response.Body);
        });
        await app.StartAsync();
        var url = app.Urls.Single();

        var ml = new MLContext(seed: 1);
        var options = Options([new TeacherEndpoint(TeacherServerProcess.OpenAiChatClient(url), "throttled", 2)], perLabel: 3);
        options.RetryDelay = TimeSpan.FromMilliseconds(10); // without Retry-After, 2 fast retries would give up inside the busy period
        var clock = Stopwatch.StartNew();
        var result = await ml.RetriKT().BlackBoxKnowledgeExtractor(options).FitAsync(StoryData(ml));
        Assert.True(throttled > 0);
        Assert.True(result.Report.Retries >= throttled, result.Report.ToString());
        Assert.Empty(result.Report.EndpointsTakenOut);
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(1), $"finished after {clock.Elapsed}: Retry-After was not waited for");
        Assert.Equal(3, result.Report.Extraction.Kept["happy"]);
        Assert.Equal(3, result.Report.Extraction.Kept["sad"]);
        await app.StopAsync();
    }

    /// <summary>
    /// A real Kestrel front on 127.0.0.1 that forwards to the teacher, serving every request as stories260K whatever model
    /// it names, and answering as <paramref name="answerAs"/> (null: as the teacher does).
    /// </summary>
    private static async Task<WebApplication> ModelRewritingProxy(string teacherUrl, string? answerAs)
    {
        var app = LocalEndpoint.Create();
        var forward = new HttpClient { BaseAddress = new Uri(teacherUrl) };
        app.MapPost("/v1/{**path}", async (HttpContext http, string path) =>
        {
            var request = (await JsonNode.ParseAsync(http.Request.Body))!;
            request["model"] = "stories260K";
            using var answer = await forward.PostAsync("/v1/" + path, new StringContent(request.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
            var body = JsonNode.Parse(await answer.Content.ReadAsStringAsync())!;
            if (answerAs is not null && body["model"] is not null) body["model"] = answerAs;
            http.Response.StatusCode = (int)answer.StatusCode;
            http.Response.ContentType = "application/json";
            await http.Response.WriteAsync(body.ToJsonString());
        });
        await app.StartAsync();
        return app;
    }

    [SharedDataFact]
    public async Task AnEndpointThatAnswersAsAnotherModelIsNamedOnceAndASnapshotOfTheSameModelIsNot()
    {
        async Task<List<string>> Run(string askFor, string? answerAs)
        {
            await using var proxy = await ModelRewritingProxy(shared.Server.Url, answerAs);
            var ml = new MLContext(seed: 1);
            var warnings = new List<string>();
            ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (warnings) warnings.Add(e.Message); };
            var client = TeacherServerProcess.OpenAiChatClient(proxy.Urls.Single(), model: askFor);
            var report = (await ml.RetriKT().BlackBoxKnowledgeExtractor(Options([new TeacherEndpoint(client, "routed", 2)], perLabel: 2)).FitAsync(StoryData(ml))).Report;
            Assert.Equal(2, report.Extraction.Kept["sad"]);
            return warnings.Where(w => w.Contains("answered as")).ToList();
        }

        // Asked for one model, served by another: named once, though every request answered so.
        var misrouted = await Run("gpt-4o-mini", answerAs: null);
        Assert.EndsWith("Teacher endpoint 'routed' was asked for model 'gpt-4o-mini' and answered as 'stories260K': unless that is the same model under another name, its samples are another teacher's.",
            Assert.Single(misrouted));
        // A dated snapshot or a tag of the model asked for is the same model.
        Assert.Empty(await Run("stories260K", answerAs: "stories260K-2024-07-18"));
        Assert.Empty(await Run("stories260K", answerAs: "stories260K:latest"));
        Assert.Empty(await Run("stories260K", answerAs: null));
    }

    [SharedDataFact]
    public void NoRetriesMeansEveryFailureCountsAtOnce_NotAPollyValidationError()
    {
        var ml = new MLContext(seed: 1);
        var options = Options([new TeacherEndpoint(shared.Server.ChatClient(), "only", 4)], perLabel: 2);
        options.MaxRetries = 0;
        var run = ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(StoryData(ml));
        Assert.Equal(2, run.Report.Extraction.Kept["happy"]);
        Assert.Equal(0, run.Report.Retries);
    }

    [SharedDataFact]
    public void TokenBudgetStopsTheRunCleanly()
    {
        var ml = new MLContext(seed: 1);
        var options = Options([new TeacherEndpoint(shared.Server.ChatClient(), "only", 2)]);
        options.TokenBudget = 1; // spent by the first answers: no new requests after them
        var report = ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(StoryData(ml)).Report;
        Assert.True(report.StoppedByTokenBudget, report.ToString());
        Assert.InRange(report.Extraction.Generated.Values.Sum(), 1, 2); // only what was in flight when the budget was reached
        Assert.True(report.TokensUsed >= 1);
    }

    [SharedDataFact]
    public void AnEndpointThatIgnoresTheLabelIsNamedAndAResumedRunCountsTheSame()
    {
        var ml = new MLContext(seed: 1);
        var warnings = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (warnings) warnings.Add(e.Message); };
        using var folder = new TempDir("retrikt-blackbox-");
        var checkpoint = folder.File("run.jsonl");
        // Eight per label: the server's draws are unseeded, and at four a run whose sad stories were half classified happy
        // (rare, but seen in CI) named "sad" too.
        var options = Options([new TeacherEndpoint(shared.Server.ChatClient(), "only", 2)], checkpoint, perLabel: 8);

        var first = ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(StoryData(ml)).Report;
        // stories260K calls nearly every story sad, whatever it was asked to write: "happy" is named, and only it.
        var share = first.Extraction.IntendedLabelShare;
        Assert.NotNull(share);
        Assert.InRange(share!.Value, 0, 0.75);
        Assert.Contains(warnings, w => w.Contains("Label 'happy': the teacher gives") && w.Contains("no more than chance (50.0 % for 2 labels)"));
        Assert.DoesNotContain(warnings, w => w.Contains("Label 'sad': the teacher gives"));

        // All of it from the checkpoint: no request, the same share and the same warning.
        warnings.Clear();
        var resumed = ml.RetriKT().BlackBoxKnowledgeExtractor(options).Fit(StoryData(ml)).Report;
        Assert.Equal(0, resumed.Requests);
        Assert.Equal(share, resumed.Extraction.IntendedLabelShare);
        Assert.Contains(warnings, w => w.Contains("Label 'happy': the teacher gives"));
    }

    [SharedDataFact]
    public void SamplesCutOffAtTheTokenLimitAreDroppedWithoutAClassificationRequestWhenAsked()
    {
        var ml = new MLContext(seed: 1);
        using var folder = new TempDir("retrikt-blackbox-");
        BlackBoxExtractorOptions Short(bool drop, string checkpoint)
        {
            // Six tokens: most stories are cut off; a few end at the newline stop first.
            var o = Options([new TeacherEndpoint(shared.Server.ChatClient(), "only", 2)], folder.File(checkpoint), perLabel: 3);
            o.MaxOutputTokens = 6; o.MinWords = 1; o.DropUnfinished = drop;
            return o;
        }

        var keep = ml.RetriKT().BlackBoxKnowledgeExtractor(Short(drop: false, "keep.jsonl")).Fit(StoryData(ml)).Report;
        Assert.Equal(0, keep.Extraction.Dropped[DropReason.Unfinished]);
        var drop = ml.RetriKT().BlackBoxKnowledgeExtractor(Short(drop: true, "drop.jsonl")).Fit(StoryData(ml)).Report;
        int unfinished = drop.Extraction.Dropped[DropReason.Unfinished];
        Assert.True(unfinished > 0, drop.ToString());
        var records = File.ReadLines(folder.File("drop.jsonl")).Skip(1).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal(unfinished, records.Count(n => n["dropped"]?.GetValue<string>() == "Unfinished"));
        Assert.All(records.Where(n => n["dropped"]?.GetValue<string>() == "Unfinished"), n => Assert.Null(n["soft_label"]));
        // A generation and a classification request per judged sample, except the cut-off ones and the blank ones (a
        // story that hits the newline stop at once): those get no classification. Which samples come out blank varies
        // with the order the two parallel requests finish in, so the blank ones are counted, not assumed absent.
        int judged = drop.Extraction.Generated.Values.Sum();
        int blank = records.Count(n => n["dropped"]?.GetValue<string>() == "Empty" && n["soft_label"] is null);
        Assert.Equal(2 * judged - unfinished - blank, drop.Requests);

        // The setting is part of the run's settings: a checkpoint written while keeping them does not resume while dropping them.
        Assert.Contains("other settings", Assert.Throws<InvalidOperationException>(() =>
            ml.RetriKT().BlackBoxKnowledgeExtractor(Short(drop: true, "keep.jsonl")).Fit(StoryData(ml))).Message);
    }
}
