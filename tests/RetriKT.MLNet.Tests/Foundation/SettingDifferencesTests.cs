using System.Text.Json.Nodes;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// The one wording of what differs between a checkpoint's settings and this run's, shared by the white-box and black-box
/// extraction checkpoints and the teacher pretrainer's (each of which had its own: values cut at 40 or 80 characters,
/// keys only the checkpoint holds named by one of them).
/// </summary>
public sealed class SettingDifferencesTests
{
    [Fact]
    public void Names_only_what_differs_keys_either_side_lacks_and_cuts_long_values()
    {
        var longStops = new string('x', 200);
        var checkpoint = new JsonObject { ["seed"] = 9, ["labels"] = "neg, pos", ["stops"] = longStops, ["retired"] = true };
        var thisRun = new JsonObject { ["seed"] = 10, ["labels"] = "neg, pos", ["stops"] = longStops + "y", ["added"] = 1 };

        var described = SettingDifferences.Describe(checkpoint, thisRun);

        string cut = "\"" + new string('x', 78) + "…";
        Assert.Equal($"seed: checkpoint 9, this run 10; stops: checkpoint {cut}, this run {cut}; added: checkpoint absent, this run 1; " +
                     "retired: checkpoint true, this run absent", described);
        Assert.Null(SettingDifferences.Describe(checkpoint, (JsonObject)checkpoint.DeepClone()));
    }
}
