using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;
using Microsoft.Extensions.Logging;
using Microsoft.ML;
using RetriKT.MLNet.Student;
using RetriKT.WebApi;

namespace RetriKT.MLNet.Hosting.Tests;

/// <summary>The sample's HTTP contract: validation as problem details, /explain, /healthz, OpenAPI, configuration.</summary>
public class WebApiTests
{
    [SharedDataFact]
    public async Task Api_ValidatesRequests_WithProblemDetails_AndServesExplainHealthAndOpenApi()
    {
        using var dir = new TempDir();
        var (v1, _) = TestModels.Save(dir.Path, "api");
        var answers = TestModels.SequentialAnswers(v1);
        await using var server = await WebApiServer.StartAsync(v1, "--Serving:MaxTextLength", "40");
        var client = server.Client;

        await AssertProblem(await client.PostAsJsonAsync("/predict", new { text = "" }), "must not be empty");
        await AssertProblem(await client.PostAsJsonAsync("/predict", new { text = "   " }), "must not be empty");
        // Zero-width and control characters only: the tokenizer drops them all, so the answer would be an empty text's.
        await AssertProblem(await client.PostAsJsonAsync("/predict", new { text = "\u200b\u200b\u0001" }), "must not be empty");
        await AssertProblem(await client.PostAsJsonAsync("/predict", new { text = new string('a', 41) }), "41 characters; at most 40");
        await AssertProblem(await client.PostAsJsonAsync("/explain", new { }), "must not be empty");
        await AssertProblem(await Post("/predict", "{\"text\": ", "application/json"), "JSON");
        await AssertProblem(await Post("/predict", "{\"text\": 5}", "application/json"), "PredictRequest");
        var wrongType = await Post("/predict", "text=hello", "application/x-www-form-urlencoded");
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, wrongType.StatusCode);
        Assert.Equal("application/problem+json", wrongType.Content.Headers.ContentType?.MediaType);

        var text = TestModels.Sentences[^1];
        using var explain = await client.PostAsJsonAsync("/explain", new { text });
        Assert.Equal(HttpStatusCode.OK, explain.StatusCode);
        using var explained = JsonDocument.Parse(await explain.Content.ReadAsStringAsync());
        var prediction = explained.RootElement.GetProperty("prediction");
        Assert.Equal(answers[text].Label, prediction.GetProperty("label").GetString());
        Assert.Equal(answers[text].Scores, prediction.GetProperty("scores").EnumerateObject().Select(p => p.Value.GetSingle()));
        Assert.Equal(0, explained.RootElement.GetProperty("neighbours").GetArrayLength());
        Assert.Equal(0, explained.RootElement.GetProperty("parts").GetArrayLength());

        Assert.Equal("Healthy", await client.GetStringAsync("/healthz"));
        var openApi = await client.GetStringAsync("/openapi/v1.json");
        Assert.Contains("\"/predict\"", openApi);
        Assert.Contains("\"/explain\"", openApi);

        async Task<HttpResponseMessage> Post(string path, string body, string mediaType) =>
            await client.PostAsync(path, new StringContent(body, Encoding.UTF8, mediaType));
    }

    [SharedDataFact]
    public async Task ARequestWhoseBodyIsStillArrivingAtShutdown_Is503_NotA500WithAStackTrace()
    {
        using var dir = new TempDir();
        var (v1, _) = TestModels.Save(dir.Path, "shutdown");
        await using var server = await WebApiServer.StartAsync(v1, "--Logging:LogLevel:Microsoft.AspNetCore.Hosting.Diagnostics", "Information");
        using var tcp = new System.Net.Sockets.TcpClient();
        await tcp.ConnectAsync(server.Address.Host, server.Address.Port);
        var stream = tcp.GetStream();
        var body = "{\"text\": \"a wonderful , moving film .\"}";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(
            $"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\n\r\n{body[..10]}"));
        Assert.True(Wait.Until(() => server.Logs.Has(LogLevel.Information, "Request starting HTTP/1.1 POST"), TimeSpan.FromSeconds(10)), "the request did not start");
        await Task.Delay(200);   // its body is being read

        // Stopping (SIGTERM) cancels the body's read inside Kestrel; that surfaced as a 500 and an Error log with a stack trace.
        var stopping = server.App.StopAsync();
        var reader = new StreamReader(stream, Encoding.ASCII);
        var statusLine = await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(20));
        var response = statusLine + "\n" + await reader.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(20));
        await stopping;
        Assert.True(statusLine?.StartsWith("HTTP/1.1 503", StringComparison.Ordinal), response);
        Assert.Contains("application/problem+json", response);
        Assert.Contains("shutting down", response);
        // Kestrel itself still logs that it could not drain the body its read left pending (its category, not the app's).
        var errors = server.Logs.Entries.Where(e => e.Level >= LogLevel.Error && e.Category != "Microsoft.AspNetCore.Server.Kestrel").ToList();
        Assert.True(errors.Count == 0, string.Join("\n", errors.Select(e => $"{e.Category}: {e.Message}")));
    }

    [SharedDataFact]
    public async Task ARequestNamingItsTextTwice_IsRefused_NotAnsweredForOneOfTheTwo()
    {
        using var dir = new TempDir();
        var (v1, _) = TestModels.Save(dir.Path, "duplicate");
        await using var server = await WebApiServer.StartAsync(v1);
        // The last of the two texts was classified and the first dropped without a word (200 OK).
        foreach (var body in new[] { "{\"text\": \"a wonderful film\", \"text\": \"dull and boring\"}", "{\"text\": \"a wonderful film\", \"Text\": \"dull and boring\"}" })
        {
            using var response = await server.Client.PostAsync("/predict", new StringContent(body, Encoding.UTF8, "application/json"));
            await AssertProblem(response, "Duplicate");
        }
    }

    [SharedDataFact]
    public async Task ARequestWithAPropertyTheApiDoesNotKnow_IsRefusedNamingIt_NotAnsweredForTheTextAlone()
    {
        using var dir = new TempDir();
        var (v1, _) = TestModels.Save(dir.Path, "unknown-property");
        await using var server = await WebApiServer.StartAsync(v1);
        // A pair sent to a one-text model under another name than text2 ("hypothesis", "sentence2", a misspelt "txt2")
        // was answered 200 for the first text alone, as if the pair had been classified.
        foreach (var (body, property) in new[]
        {
            ("{\"text\": \"a wonderful film\", \"hypothesis\": \"it was dull\"}", "hypothesis"),
            ("{\"text\": \"a wonderful film\", \"txt2\": \"it was dull\"}", "txt2"),
            ("{\"text\": \"a wonderful film\", \"labels\": [\"0\", \"1\"]}", "labels"),
        })
        {
            foreach (var path in new[] { "/predict", "/explain" })
            {
                using var response = await server.Client.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));
                await AssertProblem(response, $"'{property}'");
            }
        }
        // The known names keep any case, as before.
        using var known = await server.Client.PostAsync("/predict", new StringContent("{\"Text\": \"a wonderful film\"}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, known.StatusCode);
    }

    [SharedDataFact]
    public async Task ABodyLongerThanAnyValidRequest_IsRefusedWith413_BeforeItIsRead()
    {
        using var dir = new TempDir();
        var (v1, _) = TestModels.Save(dir.Path, "body-limit");
        await using var server = await WebApiServer.StartAsync(v1, "--Serving:MaxTextLength", "40");
        // Every request body was read whole (Kestrel's bound: 30 MB) and its text built before its length was checked:
        // sixteen 29 MB requests, each refused for its length, left the sample's process at 1.4 GB.
        // 20 KB, over the 4,576-byte bound: small enough that the client has sent it all before the server answers and
        // closes (at 1.2 MB the close can cut the upload: a broken pipe instead of the answer).
        var huge = "{\"text\": \"" + string.Join(' ', Enumerable.Repeat("good", 4_000)) + "\"}";
        using var sized = await server.Client.PostAsync("/predict", new StringContent(huge, Encoding.UTF8, "application/json"));
        var body = await sized.Content.ReadAsStringAsync();
        Assert.True(sized.StatusCode == HttpStatusCode.RequestEntityTooLarge, $"{sized.StatusCode}: {body[..Math.Min(300, body.Length)]}");
        Assert.Equal("application/problem+json", sized.Content.Headers.ContentType?.MediaType);
        Assert.Contains($"The request body has {Encoding.UTF8.GetByteCount(huge)} bytes; at most 4576 are accepted", body);

        // Sent in chunks, with no length announced: Kestrel stops reading at the same bound and closes the connection under
        // the upload, so the client sees the 413 or, when the close comes while it still writes, a broken pipe (once in CI
        // with a 1.2 MB body). Never an answer to the text.
        using var chunked = new HttpRequestMessage(HttpMethod.Post, "/explain") { Content = new StringContent(huge, Encoding.UTF8, "application/json") };
        chunked.Headers.TransferEncodingChunked = true;
        try
        {
            using var unsized = await server.Client.SendAsync(chunked);
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, unsized.StatusCode);
            Assert.Equal("application/problem+json", unsized.Content.Headers.ContentType?.MediaType);
        }
        catch (HttpRequestException cut) when (cut.InnerException is IOException) { }

        // The longest valid body still fits: both texts at the limit, every character escaped (6 bytes each).
        var escaped = string.Concat(Enumerable.Repeat("\\u0067", 40));
        using var longest = await server.Client.PostAsync("/predict",
            new StringContent($"{{\"text\": \"{escaped}\", \"text2\": \"{escaped}\"}}", Encoding.UTF8, "application/json"));
        await AssertProblem(longest, "leave text2 out");   // read and answered: the demo model classifies one text
    }

    [SharedDataFact]
    public async Task ARetriKTModel_IsServed_AndExplainReturnsTheRetrievedNeighbours()
    {
        using var dir = new TempDir();
        var ml = new Microsoft.ML.MLContext(seed: 1);
        var rows = File.ReadAllLines(SharedData.Path("data", "SST-2", "k-shot", "16-13", "train.tsv")).Skip(1)
            .Select(l => l.Split('\t')).Select(f => new LabelledText { Text = f[0], Label = f[1] }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows);
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(data);
        var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(
            new RetriKT.MLNet.Student.RetrievalClassifierTrainer.Options { Epochs = 5, Seed = 1 }).Fit(keyed);
        // Served models map the predicted key back to its label text, so clients send only Text.
        var serving = student.Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel").Fit(student.Transform(keyed)));
        var path = dir.File("retrikt.zip");
        ml.Model.Save(serving, ml.Data.LoadFromEnumerable(new[] { new TextInput() }).Schema, path);

        await using var server = await WebApiServer.StartAsync(path);
        using var predict = await server.Client.PostAsJsonAsync("/predict", new { text = "a charming and moving film" });
        Assert.Equal(HttpStatusCode.OK, predict.StatusCode);
        using var predicted = JsonDocument.Parse(await predict.Content.ReadAsStringAsync());
        Assert.Contains(predicted.RootElement.GetProperty("label").GetString(), new[] { "0", "1" });

        using var explain = await server.Client.PostAsJsonAsync("/explain", new { text = "a charming and moving film" });
        using var explained = JsonDocument.Parse(await explain.Content.ReadAsStringAsync());
        var neighbours = explained.RootElement.GetProperty("neighbours").EnumerateArray().ToList();
        Assert.Equal(3, neighbours.Count);
        Assert.All(neighbours, n =>
        {
            Assert.Contains(rows, r => r.Text == n.GetProperty("text").GetString());
            Assert.InRange(n.GetProperty("similarity").GetSingle(), -1.001f, 1.001f);
        });
        // Every part, each with its share: 32 rows build no term index, so the head and embedding retrieval; the
        // retrieval part names the same neighbours, and the parts mixed by their weights give the prediction.
        var parts = explained.RootElement.GetProperty("parts").EnumerateArray().ToList();
        Assert.Equal(new[] { "head", "retrieval" }, parts.Select(p => p.GetProperty("part").GetString()));
        Assert.Equal(1 - student.RetrievalWeight, parts[0].GetProperty("weight").GetDouble(), 12);
        Assert.Equal(student.RetrievalWeight, parts[1].GetProperty("weight").GetDouble());
        Assert.Empty(parts[0].GetProperty("neighbours").EnumerateArray());
        Assert.Equal(neighbours.Select(n => n.GetProperty("text").GetString()),
            parts[1].GetProperty("neighbours").EnumerateArray().Select(n => n.GetProperty("text").GetString()));
        var scores = explained.RootElement.GetProperty("prediction").GetProperty("scores");
        foreach (var label in new[] { "0", "1" })
        {
            double mixed = parts.Sum(p => p.GetProperty("weight").GetDouble() * p.GetProperty("scores").GetProperty(label).GetSingle());
            Assert.Equal(scores.GetProperty(label).GetSingle(), mixed, 5);
        }
        // A model of one text refuses a second one rather than leave it unread.
        await AssertProblem(await server.Client.PostAsJsonAsync("/predict", new { text = "a charming film", text2 = "and a moving one" }), "This model classifies one text: leave text2 out.");
        student.Dispose();
    }

    [SharedDataFact]
    public async Task ASentencePairModel_TakesText2_AndRefusesARequestWithoutIt()
    {
        using var dir = new TempDir();
        var ml = new Microsoft.ML.MLContext(seed: 1);
        // MRPC's 16-shot pairs (Quality, #1 ID, #2 ID, #1 String, #2 String).
        var rows = File.ReadAllLines(SharedData.Path("data", "MRPC", "k-shot", "16-13", "train.tsv")).Skip(1)
            .Select(l => l.Split('\t')).Select(f => new LabelledText { Text = f[3], Text2 = f[4], Label = f[0] }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows);
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(data);
        var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(
            new RetriKT.MLNet.Student.RetrievalClassifierTrainer.Options { SecondTextColumnName = "Text2", Epochs = 3, Seed = 1 }).Fit(keyed);
        var serving = student.Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel").Fit(student.Transform(keyed)));
        var path = dir.File("pairs.zip");
        ml.Model.Save(serving, ml.Data.LoadFromEnumerable(new[] { new TextInput() }).Schema, path);

        await using var server = await WebApiServer.StartAsync(path);
        var (first, second) = (rows[0].Text, rows[0].Text2);
        using var predict = await server.Client.PostAsJsonAsync("/predict", new { text = first, text2 = second });
        Assert.Equal(HttpStatusCode.OK, predict.StatusCode);
        using (var predicted = JsonDocument.Parse(await predict.Content.ReadAsStringAsync()))
        {
            // The scores are the model's for the pair; the library, like the API, refuses a pair without its second text.
            var served = predicted.RootElement.GetProperty("scores").GetProperty(student.LabelNames[0]).GetSingle();
            Assert.Equal(student.Predict(first, second).Scores[0], served, 5);
            Assert.Throws<ArgumentException>(() => student.Predict(first, ""));
        }
        await AssertProblem(await server.Client.PostAsJsonAsync("/predict", new { text = first }), "This model classifies sentence pairs: the second text (text2) must not be empty.");
        await AssertProblem(await server.Client.PostAsJsonAsync("/explain", new { text = first, text2 = " " }), "the second text (text2) must not be empty");

        // The neighbours are stored pairs: each with its second text.
        using var explain = await server.Client.PostAsJsonAsync("/explain", new { text = first, text2 = second });
        using var explained = JsonDocument.Parse(await explain.Content.ReadAsStringAsync());
        var neighbours = explained.RootElement.GetProperty("neighbours").EnumerateArray().ToList();
        Assert.Equal(3, neighbours.Count);
        Assert.All(neighbours, n => Assert.Contains(rows, r => r.Text == n.GetProperty("text").GetString() && r.Text2 == n.GetProperty("text2").GetString()));
        student.Dispose();
    }

    private sealed class LabelledText
    {
        public string Text { get; set; } = "";
        public string Text2 { get; set; } = "";
        public string Label { get; set; } = "";
    }

    [SharedDataFact]
    public async Task ModelPath_IsRequired_AndAMissingFileFailsStartUpWithItsPath()
    {
        var noPath = Assert.Throws<InvalidOperationException>(() => WebApiApp.Build(["--ModelPath", " "]));
        Assert.Contains("ModelPath", noPath.Message);

        using var dir = new TempDir();
        var missing = dir.File("missing.zip");
        await using var app = WebApiApp.Build(["--urls", "http://127.0.0.1:0", "--ModelPath", missing]);
        var error = await Assert.ThrowsAsync<FileNotFoundException>(() => app.StartAsync());
        Assert.Contains(missing, error.Message);
    }

    private static async Task AssertProblem(HttpResponseMessage response, string detailContains)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{response.StatusCode}: {body}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using var json = JsonDocument.Parse(body);
        Assert.Equal(400, json.RootElement.GetProperty("status").GetInt32());
        Assert.Contains(detailContains, body);
        response.Dispose();
    }
}
