using System.Text.Json.Nodes;

namespace RetriKT.MLNet.Common;

/// <summary>
/// Names what differs between the settings a checkpoint was written with and this run's
/// ("seed: checkpoint 9, this run 10; labels: checkpoint absent, this run …"), for every refusal of another run's
/// checkpoint (white-box and black-box extraction, teacher pretraining), so that all of them read alike.
/// </summary>
internal static class SettingDifferences
{
    /// <summary>Longer values are cut, so that a long setting (a list of stops, a prompt) cannot bury the others.</summary>
    private const int LongestShown = 80;

    /// <summary>
    /// The settings whose two values differ, in the order given ("absent" for a value one side lacks), or null when none
    /// does.
    /// </summary>
    public static string? Describe(IEnumerable<(string Name, string? Checkpoint, string? ThisRun)> settings)
    {
        var differences = settings.Where(s => s.Checkpoint != s.ThisRun)
            .Select(s => $"{s.Name}: checkpoint {Shown(s.Checkpoint)}, this run {Shown(s.ThisRun)}")
            .ToList();
        return differences.Count == 0 ? null : string.Join("; ", differences);
        static string Shown(string? value) => value is null ? "absent" : value.Length > LongestShown ? value[..(LongestShown - 1)] + "…" : value;
    }

    /// <summary>
    /// The keys of two JSON settings objects whose values differ (this run's keys first, then keys only the checkpoint
    /// holds), each value as JSON; null when none does.
    /// </summary>
    public static string? Describe(JsonObject checkpoint, JsonObject thisRun) =>
        Describe(thisRun.Select(kv => kv.Key).Union(checkpoint.Select(kv => kv.Key))
            .Where(key => !JsonNode.DeepEquals(checkpoint[key], thisRun[key]))
            .Select(key => (key, checkpoint[key]?.ToJsonString(), thisRun[key]?.ToJsonString())));
}
