using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace RetriKT.MLNet.Hosting.Tests.Infrastructure;

/// <summary>One /predict answer as the wire shows it.</summary>
public sealed record WireAnswer(HttpStatusCode Status, string Label, float[] Scores, long Generation, string Body);

public static class ApiClient
{
    public static async Task<WireAnswer> PredictAsync(this HttpClient client, string text, CancellationToken cancellationToken = default)
    {
        using var response = await client.PostAsJsonAsync("/predict", new { text }, cancellationToken);
        var body = await response.Content.ReadAsStringAsync(cancellationToken);
        if (response.StatusCode != HttpStatusCode.OK) return new WireAnswer(response.StatusCode, "", [], 0, body);
        using var json = JsonDocument.Parse(body);
        var root = json.RootElement;
        var scores = root.GetProperty("scores").EnumerateObject()   // slot order, as the server wrote them
            .Select(p => p.Value.GetSingle()).ToArray();
        return new WireAnswer(response.StatusCode, root.GetProperty("label").GetString()!, scores, root.GetProperty("modelGeneration").GetInt64(), body);
    }

    /// <summary>True when the wire answer is exactly <paramref name="expected"/> (same label, same scores in slot order).</summary>
    public static bool Is(this WireAnswer answer, Answer expected) => answer.Status == HttpStatusCode.OK && expected.Matches(answer.Label, answer.Scores);
}
