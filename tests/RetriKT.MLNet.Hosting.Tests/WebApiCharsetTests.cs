using System.Net;
using System.Text;
using System.Text.Json;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Hosting.Tests;

/// <summary>The charset of a JSON body: a known one is decoded, an unknown one is the client's error.</summary>
public class WebApiCharsetTests
{
    [SharedDataFact]
    public async Task AnUnknownCharset_Is415WithProblemDetails_AndAKnownOneIsDecoded()
    {
        using var dir = new TempDir();
        var (v1, _) = TestModels.Save(dir.Path, "charset");
        var answers = TestModels.SequentialAnswers(v1);
        await using var server = await WebApiServer.StartAsync(v1);
        var text = TestModels.Sentences[^1];
        var json = $"{{\"text\":\"{text}\"}}";

        using (var response = await server.Client.PostAsync("/predict", Body(Encoding.UTF8.GetBytes(json), "application/json; charset=nonsense")))
        {
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.UnsupportedMediaType, $"{(int)response.StatusCode}: {body}");
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
            Assert.Contains("'nonsense'", JsonDocument.Parse(body).RootElement.GetProperty("detail").GetString());
        }

        foreach (var (bytes, contentType) in new[]
                 {
                     (Encoding.Unicode.GetBytes(json), "application/json; charset=utf-16"),
                     (Encoding.UTF8.GetBytes(json), "application/json; charset=UTF-8"),
                     (Encoding.UTF8.GetBytes(json), "application/json"),
                     (Encoding.UTF8.GetBytes(json), "application/json; charset=\"utf-8\""),
                     (Encoding.Unicode.GetBytes(json), "application/json; charset=\"utf-16\""),
                 })
        {
            using var response = await server.Client.PostAsync("/predict", Body(bytes, contentType));
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"{contentType}: {(int)response.StatusCode}: {body}");
            Assert.Equal(answers[text].Label, JsonDocument.Parse(body).RootElement.GetProperty("label").GetString());
        }

        static ByteArrayContent Body(byte[] bytes, string contentType)
        {
            var content = new ByteArrayContent(bytes);
            content.Headers.TryAddWithoutValidation("Content-Type", contentType);
            return content;
        }
    }
}
