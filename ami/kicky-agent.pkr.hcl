# The AMI: Debian 12 with Docker, AWS's SSM Agent (signature checked) and the kicky-agent .deb,
# their units enabled (kicky-agent's not started: the image has no application; each instance's
# first boot starts it). For current Packer with the Amazon plugin:
#
#   cargo deb                                  # target/debian/kicky-agent_<version>_amd64.deb
#   packer init ami/kicky-agent.pkr.hcl        # fetches the Amazon plugin (required_plugins)
#   packer build -var region=eu-west-1 -var deb_path=target/debian/kicky-agent_0.1.0-1_amd64.deb \
#     -var 'images=["111122223333.dkr.ecr.eu-west-1.amazonaws.com/orange:1.4.2"]' ami/kicky-agent.pkr.hcl
#
# No open SSH: Packer reaches the builder instance through Session Manager (`ssh_interface =
# "session_manager"`; the machine running Packer needs AWS's session-manager-plugin and
# ssm:StartSession), so its temporary security group has no inbound rule and the instance needs
# no public address. Debian's AMI has no SSM Agent: ami/install-ssm-agent.sh, the builder's user
# data, installs it at first boot (from AWS's bucket in the build's region, only when its
# signature is good, by the pinned key), and the build then checks it is there and enabled, so
# every instance of the AMI has it. The builder runs with IMDSv2 required, hop limit 1, and the
# AMI is marked IMDSv2-only (`imds_support`); the launch template (ami/cloudformation.yaml) also
# requires it.

packer {
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}

# The region the AMI is built in (and the SSM Agent downloaded from). No default: the AMI is
# built where the stack runs (or copied there).
variable "region" {
  type = string
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

# The .deb built by `cargo deb`.
variable "deb_path" {
  type = string
}

# Images pulled into the AMI, so an instance's first sync finds them (`compose.pull: missing`
# then pulls nothing; `always` still asks the registry, and moves only what changed). From ECR,
# with amazon-ecr-credential-helper and the builder's role (below); public images need nothing.
variable "images" {
  type    = list(string)
  default = []
}

# An instance profile for the builder instead of the temporary one below: it needs what the
# temporary policy grants (the SSM Agent's channels, ECR pulls when images are pre-pulled).
variable "iam_instance_profile" {
  type    = string
  default = ""
}

locals {
  stamp = formatdate("YYYYMMDD-hhmmss", timestamp())
}

source "amazon-ebs" "debian" {
  region               = var.region
  instance_type        = var.instance_type
  iam_instance_profile = var.iam_instance_profile
  # Without iam_instance_profile: a role made for the build and deleted after it, with the SSM
  # Agent's own needs (as the stack's ssm-agent policy) and ECR pulls for pre-pulled images.
  temporary_iam_instance_profile_policy_document {
    Version = "2012-10-17"
    Statement {
      Effect = "Allow"
      Action = [
        "ssm:UpdateInstanceInformation",
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
        "ec2messages:AcknowledgeMessage",
        "ec2messages:DeleteMessage",
        "ec2messages:FailMessage",
        "ec2messages:GetEndpoint",
        "ec2messages:GetMessages",
        "ec2messages:SendReply",
      ]
      Resource = ["*"]
    }
    Statement {
      Effect = "Allow"
      Action = [
        "ecr:GetAuthorizationToken",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
      ]
      Resource = ["*"]
    }
  }
  # SSH through a Session Manager tunnel: no inbound rule, no public address needed.
  ssh_username     = "admin"
  ssh_interface    = "session_manager"
  pause_before_ssm = "30s"
  # Cloud-init runs it as root at the builder's first boot: the SSM Agent the tunnel needs.
  user_data_file = "${path.root}/install-ssm-agent.sh"
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  imds_support    = "v2.0"
  ami_name        = "kicky-agent-${local.stamp}"
  ami_description = "Debian 12, Docker, SSM Agent, kicky-agent (enabled)"
  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    # Debian's own account.
    owners      = ["136693071363"]
    most_recent = true
  }
  tags = {
    Name    = "kicky-agent"
    Builder = "packer"
  }
}

build {
  sources = ["source.amazon-ebs.debian"]

  provisioner "file" {
    source      = var.deb_path
    destination = "/tmp/kicky-agent.deb"
  }

  provisioner "shell" {
    inline = [
      "set -eux",
      # The user data (the SSM Agent's install) has finished, and apt is free.
      "cloud-init status --wait >/dev/null",
      "dpkg-query -W -f '$${Status}\\n' amazon-ssm-agent | grep -qx 'install ok installed'",
      "systemctl is-enabled amazon-ssm-agent.service",
      "sudo apt-get update -q",
      "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl docker.io amazon-ecr-credential-helper /tmp/kicky-agent.deb",
      "sudo systemctl enable docker.service",
      # kicky-agent-imds-guard (from the .deb) runs before Docker: only the kicky-imds network's
      # containers reach instance metadata.
      "systemctl is-enabled kicky-agent-imds-guard.service",
      # Enabled, not started: the builder instance runs no application.
      "systemctl is-enabled kicky-agent.service",
      "test \"$(systemctl is-active kicky-agent.service || true)\" != active",
      "rm /tmp/kicky-agent.deb",
    ]
  }

  # Pre-pulled images live in the AMI's snapshot. EBS loads a snapshot's blocks lazily: the first
  # read of each block on a new instance comes from S3, so the first start of a big image can be
  # slower than a pull. Either turn on Fast Snapshot Restore for the AMI's snapshot in the AZs the
  # group uses, or read the image layers once at boot (for example `find /var/lib/docker -type f
  # -exec cat {} + > /dev/null` in a oneshot unit ordered before kicky-agent).
  provisioner "shell" {
    inline = concat(["set -eux"], [for image in var.images : "sudo docker pull ${image}"])
  }
}
